"""Feature definitions (spec) and their two executions: batch (numpy) and incremental."""
