"""Judging: limits against records. Budgets, baseline comparison, the run-to-run noise model, leak finding,
and `evaluate`, which makes one test's `Decision`. Plain functions over data; no pytest."""
