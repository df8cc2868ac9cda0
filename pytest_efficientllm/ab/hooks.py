"""`pytest --efficiency-ab=BASE[..HEAD] [pytest args...]`: the `ab` command as a pytest option.

The rest of the command line is what each side runs; this process measures nothing itself
(it returns from `pytest_cmdline_main` before a session starts) and exits as the command does.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_efficientllm.ab.command import DEFAULT_PAIRS, run_comparison
from pytest_efficientllm.ab.outputs import render_lines, write_outputs
from pytest_efficientllm.ab.revisions import RevisionError

OPTIONS = ("--efficiency-ab", "--efficiency-ab-pairs", "--efficiency-ab-output")  # each takes a value
FLAGS = ("--efficiency-ab-no-confirm",)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("efficiency")
    group.addoption(
        "--efficiency-ab",
        dest="efficiency_ab",
        default=None,
        metavar="BASE[..HEAD]",
        help="instead of running the tests here, measure BASE and HEAD (default HEAD: git revisions or folders) "
        "in alternating fresh processes and judge HEAD against BASE on the pairs (pytest-efficientllm ab)",
    )
    group.addoption(
        "--efficiency-ab-pairs",
        dest="efficiency_ab_pairs",
        type=int,
        default=DEFAULT_PAIRS,
        metavar="N",
        help=f"ABBA pairs of fresh processes for --efficiency-ab (default: {DEFAULT_PAIRS})",
    )
    group.addoption(
        "--efficiency-ab-output",
        dest="efficiency_ab_output",
        default="efficiency-ab",
        metavar="DIR",
        help="where --efficiency-ab writes the sides' run files, ab.md and ab.json (default: efficiency-ab)",
    )
    group.addoption(
        "--efficiency-ab-no-confirm",
        dest="efficiency_ab_no_confirm",
        action="store_true",
        help="--efficiency-ab fails a test on its first pairs; by default a test failing on timings alone is "
        "measured again in as many more pairs and fails only if they find it too",
    )


def side_args(args: tuple[str, ...]) -> list[str]:
    """The command line without this module's options (in `--opt=value` or `--opt value` form)."""
    out: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg in OPTIONS:
            skip = True
            continue
        if arg in FLAGS:
            continue
        if arg.startswith(tuple(f"{o}=" for o in OPTIONS)):
            continue
        out.append(arg)
    return out


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> int | None:
    spec = config.getoption("efficiency_ab", default=None)
    if not spec:
        return None
    base, _, head = spec.partition("..")
    out_dir = Path(config.getoption("efficiency_ab_output"))
    try:
        comparison = run_comparison(
            base,
            head or "HEAD",
            side_args(tuple(config.invocation_params.args)),
            out_dir,
            pairs=config.getoption("efficiency_ab_pairs"),
            confirm=not config.getoption("efficiency_ab_no_confirm"),
            start=config.invocation_params.dir,
        )
    except RevisionError as exc:
        raise pytest.UsageError(f"--efficiency-ab={spec}: {exc}") from None
    write_outputs(comparison, out_dir)
    # No session, so no terminal reporter: the lines go to stdout as the `ab` command prints them.
    for line in [*render_lines(comparison), f"run files, ab.md and ab.json: {out_dir}"]:
        print(line, flush=True)
    return int(pytest.ExitCode.TESTS_FAILED) if comparison.failed else int(pytest.ExitCode.OK)
