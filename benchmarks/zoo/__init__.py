"""The regression zoo (issue 17): realistic before/after pairs of LLM code; see workloads.py."""
