"""Side-by-side benchmarks of pytest-efficientllm against the tools users would pick instead (issue 6).

Run them all with `python benchmarks/compare_tools.py`; figures go to benchmarks/RESULTS.md.
"""
