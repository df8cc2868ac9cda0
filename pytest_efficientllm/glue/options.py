"""What a user can set: the plugin's command-line options and ini keys, and `Settings`, the one
frozen object they become.

`Settings.from_config` is the only place a config value is read and validated (CLI over
ini); a bad value is a `pytest.UsageError` naming the option to fix. Everything after it
reads `Settings`, never the config.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pytest_efficientllm.confirmation import vote as confirm
from pytest_efficientllm.core.devices import GPU_PROFILES, PROFILES, known_profile
from pytest_efficientllm.core.limits import parse_limit_assignments
from pytest_efficientllm.core.units import UnitError, parse_seconds
from pytest_efficientllm.judging.gate import GateOptions
from pytest_efficientllm.measuring.meter import EnergyWindow, MeasureProtocol
from pytest_efficientllm.measuring.session import Options
from pytest_efficientllm.telemetry.gpu_state import REQUIREMENTS


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("efficiency", "efficiency measurement (pytest-efficientllm)")
    group.addoption(
        "--gpu",
        dest="efficiency_gpu",
        default=None,
        metavar="PROFILE",
        help=f"hardware profile: {'|'.join(PROFILES)} (default: ini efficiency_gpu, else auto)",
    )
    protocol = MeasureProtocol()
    group.addoption(
        "--efficiency-rounds",
        type=int,
        default=None,
        metavar="N",
        help=f"measured rounds per test; a marker's rounds= overrides (default: ini efficiency_rounds, "
        f"else {protocol.rounds})",
    )
    group.addoption(
        "--efficiency-warmup",
        type=int,
        default=None,
        metavar="N",
        help=f"warm-up rounds per test; a marker's warmup= overrides (default: ini efficiency_warmup, "
        f"else {protocol.warmup})",
    )
    group.addoption(
        "--efficiency-min-time",
        default=None,
        metavar="DURATION",
        help="keep running rounds until this much time is measured, e.g. '0.5 s'; a marker's min_time= "
        "overrides (default: ini efficiency_min_time, else 0 s)",
    )
    group.addoption(
        "--efficiency-threads",
        type=int,
        default=None,
        metavar="N",
        help="torch threads for measured tests (default: usable cores / xdist workers)",
    )
    group.addoption(
        "--efficiency-roofline",
        dest="efficiency_roofline",
        default=None,
        metavar="PROFILES",
        help="record the roofline estimate of each measured round for these GPU profiles, e.g. h200,h100 "
        f"({'|'.join(GPU_PROFILES)}; on any machine, the CPU included: an estimate, never gated)",
    )
    parser.addini("efficiency_gpu", "default --gpu profile", default="auto")
    parser.addini("efficiency_roofline", "GPU profiles to estimate the roofline for, e.g. h200,h100", default="")
    parser.addini("efficiency_rounds", "default measured rounds per test", default=str(protocol.rounds))
    parser.addini("efficiency_warmup", "default warm-up rounds per test", default=str(protocol.warmup))
    parser.addini("efficiency_min_time", "default minimum measured time per test", default="0 s")
    parser.addini("efficiency_threads", "torch threads for measured tests", default="")
    # Baselines and gating (docs/gate.md).
    group.addoption(
        "--update-baselines",
        dest="efficiency_update_baselines",
        action="store_true",
        default=False,
        help="write the baselines of the tests that ran and passed their own assertions",
    )
    group.addoption(
        "--baselines-dir",
        dest="efficiency_baselines_dir",
        default=None,
        metavar="DIR",
        help="baselines folder (default: ini efficiency_baselines_dir, else baselines/ at the rootdir)",
    )
    group.addoption(
        "--efficiency-gate",
        dest="efficiency_gate",
        default=None,
        choices=("fail", "warn", "off"),
        help="what a broken budget or a regression does: fail (default), warn, off",
    )
    group.addoption(
        "--efficiency-strict",
        dest="efficiency_strict",
        action="store_true",
        default=None,
        help="a measured test without a baseline fails instead of being reported as new",
    )
    group.addoption(
        "--efficiency-json",
        dest="efficiency_json",
        default=None,
        metavar="PATH",
        help="write every record of the run (raw rounds included) and its verdicts to PATH",
    )
    group.addoption(
        "--efficiency-limit",
        dest="efficiency_limit",
        action="append",
        default=[],
        metavar="METRIC=LIMIT",
        help="budget or tolerance for every test of this run, over the markers' "
        "(e.g. latency=+10%% or 'peak_memory=<= 2 GiB'); repeatable",
    )
    group.addoption(
        "--efficiency-devices",
        dest="efficiency_devices",
        default=None,
        metavar="0,1,...",
        help="pin xdist worker i to GPU i (mod the count) through CUDA_VISIBLE_DEVICES",
    )
    group.addoption(
        "--efficiency-calibrate-every",
        dest="efficiency_calibrate_every",
        default=None,
        metavar="DURATION",
        help="re-measure the calibration workload when the run is longer than this; 'off' never "
        "calibrates (default: ini, 10 min)",
    )
    group.addoption(
        "--efficiency-fixed-layout",
        dest="efficiency_fixed_layout",
        action="store_true",
        default=None,
        help="re-execute pytest once with ASLR off and PYTHONHASHSEED=0, so runs differ only in what "
        "they measure (Linux; default: ini efficiency_fixed_layout)",
    )
    group.addoption(
        "--efficiency-confirm",
        dest="efficiency_confirm",
        type=int,
        default=None,
        metavar="N",
        help="before a measured metric fails a test, measure the test again in N fresh processes "
        "and fail only if every one finds it (0: never; default: ini efficiency_confirm, 2)",
    )
    parser.addini(
        "efficiency_confirm",
        "fresh processes that confirm a measured regression before it fails a test",
        default=str(confirm.DEFAULT_PROCESSES),
    )
    group.addoption(
        "--efficiency-confirm-spacing",
        dest="efficiency_confirm_spacing",
        default=None,
        metavar="DURATION",
        help="start each confirming process at least this long after the test's "
        "previous measurement; the run goes on meanwhile (default: ini, 20 s)",
    )
    parser.addini(
        "efficiency_confirm_spacing",
        "least time between a test's measurement and the next process that confirms it",
        default=f"{confirm.DEFAULT_SPACING_S:g} s",
    )
    parser.addini(
        "efficiency_fixed_layout",
        "run with ASLR off and PYTHONHASHSEED=0 (re-executes pytest once)",
        type="bool",
        default=False,
    )
    parser.addini("efficiency_baselines_dir", "baselines folder, relative to the rootdir", default="baselines")
    parser.addini("efficiency_gate", "gate mode: fail|warn|off", default="fail")
    parser.addini("efficiency_strict", "a measured test without a baseline fails", type="bool", default=False)
    parser.addini(
        "efficiency_limits",
        "budgets/tolerances for every test, METRIC=LIMIT per line (markers override)",
        type="linelist",
        default=[],
    )
    parser.addini("efficiency_devices", "GPUs to pin xdist workers to, e.g. 0,1", default="")
    parser.addini("efficiency_calibrate_every", "calibration interval, or off", default="10 min")
    group.addoption(
        "--efficiency-require",
        dest="efficiency_require",
        default=None,
        metavar="NAMES",
        help="a usage error at start-up unless the GPU is in this state: "
        + "; ".join(f"{name}: {what}" for name, what in REQUIREMENTS.items())
        + " (comma-separated; default: ini efficiency_require, none)",
    )
    parser.addini("efficiency_require", "GPU state the runner promises, e.g. locked-clocks,idle-gpu", default="")
    # Energy windows (docs/telemetry.md, "Energy windows long enough").
    group.addoption(
        "--efficiency-energy-resolution",
        dest="efficiency_energy_resolution",
        default=None,
        metavar="PERCENT",
        help="time more rounds until a window spans enough updates of an energy counter with an update "
        "period (NVML's) for this worst-case quantisation error, e.g. 2%%; 'off' never extends (default: ini, 5%%)",
    )
    group.addoption(
        "--efficiency-energy-max-time",
        dest="efficiency_energy_max_time",
        default=None,
        metavar="DURATION",
        help="the longest a test's window is extended to for its energy (default: ini, 10 s)",
    )
    group.addoption(
        "--efficiency-cooldown",
        dest="efficiency_cooldown",
        default=None,
        metavar="DURATION",
        help="sleep this long before each measured window, outside the timed rounds, and record the GPU "
        "temperature at window start (default: ini, off)",
    )
    parser.addini(
        "efficiency_energy_resolution", "energy quantisation an energy window is extended to, or off", default="5%"
    )
    parser.addini("efficiency_energy_max_time", "cap of an energy window's extension per test", default="10 s")
    parser.addini("efficiency_cooldown", "sleep before each measured window, or off", default="off")
    group.addoption(
        "--efficiency-energy-devices",
        dest="efficiency_energy_devices",
        default=None,
        choices=("current", "visible"),
        help="whose energy a test's is: the current CUDA device (default), or every device this process "
        "sees (CUDA_VISIBLE_DEVICES), summed with each kept, for tests spread over GPUs",
    )
    parser.addini("efficiency_energy_devices", "current|visible: the GPUs whose energy is read", default="current")


def parse_devices(text: str) -> tuple[str, ...]:
    """'0,1' -> ('0', '1'); device indices or GPU UUIDs as CUDA_VISIBLE_DEVICES takes them."""
    items = tuple(part.strip() for part in text.split(",") if part.strip())
    if text.strip() and not items:
        raise ValueError(f"--efficiency-devices={text!r}: expected a comma-separated list like 0,1")
    for item in items:
        if not re.fullmatch(r"\d+|(GPU|MIG)-[0-9A-Za-z-]+", item):
            raise ValueError(f"--efficiency-devices={text!r}: {item!r} is not a device index or GPU/MIG UUID")
    if len(set(items)) != len(items):
        raise ValueError(f"--efficiency-devices={text!r}: a device is listed twice")
    return items


def _parse_names(text: str, option: str, valid: Iterable[str], what: str) -> tuple[str, ...]:
    """'a, B' -> ('a', 'b'): names from `valid`, each once, in order; an unknown one is a
    ValueError naming the option and listing the valid ones."""
    allowed = tuple(valid)
    names = [part.strip().lower() for part in text.split(",") if part.strip()]
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise ValueError(
            f"{option}={text}: unknown {what} {', '.join(repr(n) for n in unknown)}; choose from {', '.join(allowed)}"
        )
    return tuple(dict.fromkeys(names))


def parse_roofline(text: str) -> tuple[str, ...]:
    """'h200, H100' -> ('h200', 'h100'): GPU profiles of the datasheet table, each once, in order."""
    return _parse_names(text, "--efficiency-roofline", GPU_PROFILES, "GPU profile")


def parse_requirements(text: str) -> tuple[str, ...]:
    """'locked-clocks, idle-gpu' -> ('locked-clocks', 'idle-gpu'): each once, in order."""
    return _parse_names(text, "--efficiency-require", REQUIREMENTS, "requirement")


def parse_energy_window(resolution: str, max_time: str, cooldown: str) -> EnergyWindow:
    """`--efficiency-energy-resolution=2%` (or off), `--efficiency-energy-max-time=10s`,
    `--efficiency-cooldown=5s` (or off) -> the meter's `EnergyWindow`."""
    text = resolution.strip()
    fraction: float | None = None
    if text.lower() != "off":
        match = re.fullmatch(r"(\d+(?:\.\d*)?|\.\d+)\s*%", text)
        if not match or not 0 < float(match.group(1)) < 100:
            raise ValueError(
                f"--efficiency-energy-resolution={resolution}: expected a percentage between 0 and 100 "
                "like '2%', or 'off'"
            )
        fraction = float(match.group(1)) / 100
    try:
        cap = parse_seconds(max_time)
    except UnitError:
        cap = 0.0
    if cap <= 0:
        raise ValueError(f"--efficiency-energy-max-time={max_time}: expected a duration above 0 s, like '10 s'")
    try:
        pause = 0.0 if cooldown.strip().lower() in ("off", "") else parse_seconds(cooldown)
    except UnitError:
        pause = -1.0
    if pause < 0:
        raise ValueError(f"--efficiency-cooldown={cooldown}: expected a duration of 0 s or more, or 'off'")
    return EnergyWindow(fraction, cap, pause)


# pytest's options under which no test runs (an IDE's test discovery runs `--collect-only` on every
# save): such a run measures nothing, so the plugin opens nothing, prints nothing and writes nothing,
# not even an empty run file over the last real one.
NO_TEST_OPTIONS = (
    ("collectonly", "--collect-only"),
    ("setuponly", "--setup-only"),
    ("setupplan", "--setup-plan"),
    ("showfixtures", "--fixtures"),
    ("show_fixtures_per_test", "--fixtures-per-test"),
    ("markers", "--markers"),
    ("help", "--help"),
    ("version", "--version"),
)


def no_test_option(options: Any) -> str:
    """The pytest option in `options` (a config's option namespace) under which no test runs, or ""."""
    return next((flag for dest, flag in NO_TEST_OPTIONS if getattr(options, dest, False)), "")


def _setting(config: pytest.Config, name: str) -> Any:
    value = config.getoption(f"efficiency_{name}", default=None)
    return value if value is not None else config.getini(f"efficiency_{name}")


def _given(config: pytest.Config, name: str, raw: object) -> str:
    """The setting as the user gave it: '--efficiency-min-time=fast' or 'ini efficiency_min_time = fast'."""
    if config.getoption(f"efficiency_{name}", default=None) is not None:
        return f"--efficiency-{name.replace('_', '-')}={raw}"
    return f"ini efficiency_{name} = {raw}"


def _number(config: pytest.Config, name: str, parse: Callable[[str], float], least: float, shape: str) -> float:
    """Option `name` parsed and at least `least`; a ValueError naming the option and its value otherwise."""
    raw = _setting(config, name)
    try:
        value = parse(str(raw).strip())
    except (ValueError, UnitError):
        value = None
    if value is None or value < least:
        raise ValueError(f"{_given(config, name, raw)}: expected {shape}")
    return value


@dataclass(frozen=True)
class Settings:
    """The plugin's settings for this run, CLI over ini. Units: seconds."""

    measuring: Options = field(default_factory=Options)
    gate: GateOptions = field(default_factory=GateOptions)
    baselines_dir: Path = Path("baselines")
    json_path: Path | None = None
    devices: tuple[str, ...] = ()  # --efficiency-devices: GPUs xdist workers are pinned to
    confirm_processes: int = confirm.DEFAULT_PROCESSES
    confirm_spacing_s: float = confirm.DEFAULT_SPACING_S
    calibrate: bool = True  # False: --efficiency-calibrate-every=off
    calibrate_every_s: float | None = None  # None: once, at the first measured test
    require: tuple[str, ...] = ()  # --efficiency-require: GPU state the runner promises
    no_tests: str = ""  # the pytest option under which no test runs this time ("--collect-only"), or ""

    @property
    def confirming(self) -> bool:
        """Whether measured regressions go to a vote of fresh processes in this run."""
        return self.confirm_processes > 0 and self.gate.mode == "fail" and not self.gate.update

    @classmethod
    def from_config(cls, config: pytest.Config) -> Settings:
        """Read and check every option; a bad one is a UsageError naming it."""
        try:
            return cls._from_config(config)
        except (ValueError, UnitError) as exc:
            raise pytest.UsageError(f"efficiency options: {exc}") from None

    @classmethod
    def _from_config(cls, config: pytest.Config) -> Settings:
        rounds = int(_number(config, "rounds", int, 1, "a whole number of 1 or more"))
        warmup = int(_number(config, "warmup", int, 0, "a whole number of 0 or more"))
        min_time = _number(config, "min_time", parse_seconds, 0, "a duration of 0 s or more, like '0.5 s'")
        threads = (
            int(_number(config, "threads", int, 1, "a whole number of 1 or more"))
            if _setting(config, "threads") not in ("", None)
            else None
        )
        # Checked here, not only where the session opens: a run that opens none (`--collect-only`) is told too.
        given = "--gpu" if config.getoption("efficiency_gpu", default=None) is not None else "ini efficiency_gpu"
        gpu = known_profile(str(_setting(config, "gpu")), given)
        measuring = Options(
            gpu=gpu,
            defaults=MeasureProtocol(rounds, warmup, min_time),
            threads=threads,
            roofline=parse_roofline(str(_setting(config, "roofline") or "")),
        )
        gate = GateOptions(
            mode=str(_setting(config, "gate")),
            strict=bool(_setting(config, "strict")),
            update=bool(config.getoption("efficiency_update_baselines", False)),
            ini_limits=parse_limit_assignments(config.getini("efficiency_limits"), "ini efficiency_limits"),
            cli_limits=parse_limit_assignments(config.getoption("efficiency_limit", []) or [], "--efficiency-limit"),
        )
        confirm_processes = int(_number(config, "confirm", int, 0, "a whole number of 0 or more processes"))
        spacing = _number(config, "confirm_spacing", parse_seconds, 0, "a duration of 0 s or more, like '20 s'")
        calibrate = str(_setting(config, "calibrate_every")).strip().lower() != "off"
        every = (
            _number(config, "calibrate_every", parse_seconds, 0, "a duration like '10 min', or 'off'")
            if calibrate
            else None
        )
        devices = parse_devices(str(_setting(config, "devices") or ""))
        if os.environ.get(confirm.CONFIRM_ENV):
            confirm_processes = 0  # this is a confirmation process: it measures, the one that started it judges
        cli_dir = config.getoption("efficiency_baselines_dir", default=None)
        # A path on the command line is relative to where pytest was started; one in the ini to the rootdir.
        baselines_dir = (
            (config.invocation_params.dir / cli_dir)
            if cli_dir
            else (config.rootpath / config.getini("efficiency_baselines_dir"))
        )
        energy = parse_energy_window(
            str(_setting(config, "energy_resolution")),
            str(_setting(config, "energy_max_time")),
            str(_setting(config, "cooldown")),
        )
        energy_devices = str(_setting(config, "energy_devices")).strip()
        if energy_devices not in ("current", "visible"):
            raise ValueError(f"efficiency_energy_devices={energy_devices!r}: expected current or visible")
        measuring = dataclasses.replace(measuring, energy=energy, all_devices=energy_devices == "visible")
        json_raw = config.getoption("efficiency_json", default=None)
        json_path = (config.invocation_params.dir / json_raw) if json_raw else None
        if json_path is not None and not json_path.parent.is_dir():
            raise pytest.UsageError(f"--efficiency-json={json_raw}: folder {json_path.parent} does not exist")
        return cls(
            measuring,
            gate,
            Path(baselines_dir),
            json_path,
            devices,
            confirm_processes,
            spacing,
            calibrate,
            every if every and every > 0 else None,
            require=parse_requirements(str(_setting(config, "require") or "")),
            no_tests=no_test_option(config.option),
        )
