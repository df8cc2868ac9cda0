"""The pytest entry point (`pytest11: efficiency`): registers the plugin's hook modules.

Each hook module is thin and delegates to plain Python below it (docs/architecture.md):
`glue.hooks` (options, marker, fixture, the gate applied to reports, session end),
`confirmation.hooks` (tests held for a vote in fresh processes), `report.hooks`
(`--efficiency-report`), `distributed.hooks` (`world_size=N`, torchrun) and `ab.hooks`
(`--efficiency-ab`, base against head).
"""

from __future__ import annotations

import os

# Idle OpenMP threads spin by default: on a shared CPU they burn the time a neighbour
# needs and count as this process's CPU time, so CPU seconds stop measuring the work.
# libgomp reads this once, when torch loads it, hence here at plugin import (before any
# conftest imports torch); a value the user set wins. Recorded in the fingerprint.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

pytest_plugins = [
    "pytest_efficientllm.glue.hooks",
    "pytest_efficientllm.confirmation.hooks",
    "pytest_efficientllm.report.hooks",
    "pytest_efficientllm.distributed.hooks",
    "pytest_efficientllm.ab.hooks",
]
