"""The hot path: fetch, decode, align, windows, score, publish, acknowledge, store, commit."""
