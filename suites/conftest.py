"""Options and fixtures of the EfficientLLM suites (`pytest suites/`).

--scale=auto|tiny|small|paper   model sizes and run lengths (efficientllm_models/scales.py); auto:
                                small on a CUDA GPU, tiny on the CPU
--model-path=DIR           a local transformers checkpoint for the fine-tuning and
                           quantization axes instead of a model built from a config
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).parent))  # the shared `efficientllm_models` package

import pytest  # noqa: E402
import torch  # noqa: E402
from efficientllm_models import SCALES, Scale, get_scale  # noqa: E402

SEED = 0
AUTO = "auto"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("efficientllm suites")
    group.addoption(
        "--scale",
        default=AUTO,
        metavar="SCALE",
        help=f"suite model sizes: {AUTO}|{'|'.join(SCALES)} (default {AUTO}: small on a CUDA GPU, where tiny "
        "measures little but kernel launches, and tiny on the CPU, the whole matrix on 2 cores)",
    )
    group.addoption(
        "--model-path",
        default=None,
        metavar="DIR",
        help="local transformers checkpoint (config.json + weights) for the fine-tuning and quantization axes",
    )


def pytest_configure(config: pytest.Config) -> None:
    try:
        if config.getoption("scale") != AUTO:
            get_scale(config.getoption("scale"))
    except ValueError as exc:
        raise pytest.UsageError(f"--scale: {exc}, or {AUTO}") from None
    path = config.getoption("model_path")
    if path is not None:
        p = Path(path)
        if not p.is_dir():
            raise pytest.UsageError(f"--model-path {path}: no such directory")
        if not (p / "config.json").is_file():
            raise pytest.UsageError(
                f"--model-path {path}: no config.json there; expected a transformers checkpoint folder"
            )


@pytest.fixture(scope="session")
def device(request: pytest.FixtureRequest) -> torch.device:
    """CUDA when present (and --gpu is not cpu), else the CPU."""
    gpu = request.config.getoption("efficiency_gpu", default=None)
    return torch.device("cuda" if torch.cuda.is_available() and gpu != "cpu" else "cpu")


@pytest.fixture(scope="module")
def scale(request: pytest.FixtureRequest, device: torch.device) -> Scale:
    """The selected scale; `paper` skips (before anything is allocated) without a GPU, naming the model
    families the test module builds: its `PAPER_FAMILIES` when it sets one (the vision suites), else the
    decoder study's."""
    name = request.config.getoption("scale")
    # One scale per kind of device, so each profile's committed baselines are of one workload.
    s = get_scale(("small" if device.type == "cuda" else "tiny") if name == AUTO else name)
    if s.needs_accelerator and device.type != "cuda":
        families = getattr(request.module, "PAPER_FAMILIES", s.paper_families)
        pytest.skip(
            f"--scale={s.name} builds the paper's model sizes ({', '.join(families)}) in "
            f"{s.train_dtype}, billions of parameters: it needs a CUDA GPU; on a CPU use --scale=tiny or --scale=small"
        )
    return s


@pytest.fixture(scope="session")
def model_path(request: pytest.FixtureRequest) -> str | None:
    return request.config.getoption("model_path")


@pytest.fixture(autouse=True)
def _seeded() -> None:
    """Every test starts from the same torch seed, whatever ran before it."""
    torch.manual_seed(SEED)
