import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from pytest_efficientllm.telemetry.flops import count_flops  # noqa: E402

# FlopCounterMode imports parts of torch._inductor on first use, and one of them registers
# a torch library. pytester's in-process runs unload modules first imported inside them;
# a later re-import would register that library twice, which torch refuses. Importing
# them here, before any pytester run, keeps them loaded for the whole session.
count_flops(lambda: torch.ones(2, 2) @ torch.ones(2, 2))

pytest_plugins = ["pytester"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "slow: starts pytest processes one after another (a minute or more on a 2-core runner); "
        "`-m 'not slow'` leaves it out, and the GPU check starts these first",
    )
