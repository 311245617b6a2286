"""Where histories come from: the handbook files, our JSONL events, the simulator."""
