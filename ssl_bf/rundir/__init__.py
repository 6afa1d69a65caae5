"""The run directory: checkpoints, the exported backbone, metrics.jsonl, the lock and the
record of config changes."""
