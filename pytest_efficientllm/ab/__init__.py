"""Base against head on one machine, interleaved: `pytest-efficientllm ab BASE HEAD [pytest args...]`.

`revisions` makes a worktree of each git revision (and removes it afterwards), `schedule`
orders the fresh processes, `runner` runs one side's pytest process, `command` puts them
together and judges the pairs (`judging.paired`), and `outputs` renders the comparison.
"""
