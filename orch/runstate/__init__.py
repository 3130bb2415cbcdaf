"""What a run keeps on disk: the run record, per-task state and results, the lock, atomic writes."""
