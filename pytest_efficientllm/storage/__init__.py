"""Storage: baseline files (atomic writes, per-file locks) and run files."""
