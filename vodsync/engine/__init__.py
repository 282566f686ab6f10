"""The reconcile pipeline: diff (pure) -> plan (pure) -> executor (the only stage with I/O)."""
