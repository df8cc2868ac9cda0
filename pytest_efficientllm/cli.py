"""Command line: compare, merge, report and export run files without re-running anything.

    python -m pytest_efficientllm compare OLD.json NEW.json [--tolerance AL=+10%] [--mode warn]
    python -m pytest_efficientllm merge A.json B.json -o ALL.json [--allow-mixed-profiles] [--allow-duplicates]
    python -m pytest_efficientllm report ALL.json -o report.html|report.md|report.json
    python -m pytest_efficientllm export-benchmark-action RUN.json --smaller S.json --bigger B.json
    python -m pytest_efficientllm export-bencher RUN.json -o bmf.json
    python -m pytest_efficientllm ab BASE HEAD [--pairs 6] [--output DIR] [--no-confirm] [-- pytest args...]

Exit status: 0 success; 1 a regression (`compare`, `ab`); 2 bad input or usage (argparse's own
code for usage errors), with a message naming the file and what to fix.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from pytest_efficientllm.ab.command import DEFAULT_PAIRS, run_comparison
from pytest_efficientllm.ab.outputs import render_lines, write_outputs
from pytest_efficientllm.ab.revisions import RevisionError
from pytest_efficientllm.core.limits import Limit, LimitError, parse_limit
from pytest_efficientllm.report.bencher import bmf
from pytest_efficientllm.report.comparison import (
    compare_runs,
    render_comparison,
    with_baseline,
)
from pytest_efficientllm.report.export import export_entries, left_out_lines
from pytest_efficientllm.report.inputs import ReportError, check_report_path, load_run
from pytest_efficientllm.report.merge import merge_runs
from pytest_efficientllm.report.write import write_report
from pytest_efficientllm.storage.runfile import write_atomic, write_run

EXIT_OK, EXIT_REGRESSION, EXIT_USAGE = 0, 1, 2


def _out(line: str = "") -> None:
    print(line, flush=True)


def _err(line: str) -> None:
    print(f"pytest-efficientllm: {line}", file=sys.stderr, flush=True)


def _output_path(path: str, suffixes: tuple[str, ...] = (".json",)) -> Path:
    return check_report_path(path, suffixes)


def cmd_compare(args: argparse.Namespace) -> int:
    limits = _limits(args.tolerance)
    old, new = load_run(args.old), load_run(args.new)
    results = compare_runs(old, new, limits, args.mode)
    for line in render_comparison(results, args.old, args.new, args.verbose):
        _out(line)
    return EXIT_REGRESSION if any(r.failed for r in results) else EXIT_OK


def _limits(tolerances: Sequence[str]) -> list[Limit]:
    """`--tolerance AL=+10%` options as the marker's tolerance limits."""
    limits = []
    for text in tolerances:
        name, sep, value = text.partition("=")
        try:
            if not sep:
                raise LimitError("expected METRIC=+N%")
            limit = parse_limit(name.strip(), value.strip())
        except (LimitError, KeyError, ValueError) as exc:
            raise ReportError(f"--tolerance {text!r}: {exc}") from None
        if limit.kind != "tolerance":
            raise ReportError(
                f"--tolerance {text!r}: a tolerance looks like 'AL=+10%'; budgets are checked by the plugin"
            )
        limits.append(limit)
    return limits


def cmd_merge(args: argparse.Namespace) -> int:
    output = _output_path(args.output)
    inputs = [(path, load_run(path, allow_empty=True)) for path in args.inputs]
    merged = merge_runs(inputs, allow_mixed_profiles=args.allow_mixed_profiles, allow_duplicates=args.allow_duplicates)
    for warning in merged.warnings:
        _err(f"warning: {warning}")
    write_run(output, merged.run)
    _out(f"merged {len(merged.run.records)} record(s) from {len(inputs)} file(s) into {output}")
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    output = check_report_path(args.output)  # before reading: a bad path fails fast
    limits = _limits(args.tolerance)
    run = load_run(args.input)
    if args.baseline:
        run = with_baseline(run, load_run(args.baseline), limits, args.mode)
    write_report(run, output)
    _out(f"wrote {output} ({len(run.records)} record(s))")
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    if not args.smaller and not args.bigger:
        raise ReportError("export-benchmark-action: give --smaller FILE and/or --bigger FILE to write")
    targets = [(p, key) for p, key in ((args.smaller, "smaller"), (args.bigger, "bigger")) if p]
    paths = [(_output_path(p), key) for p, key in targets]
    run = load_run(args.input)
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    result = export_entries(run.records, metrics)
    for path, key in paths:
        entries = getattr(result, key)
        write_atomic(path, json.dumps(entries, indent=1) + "\n")
        tool = "customSmallerIsBetter" if key == "smaller" else "customBiggerIsBetter"
        _out(f"wrote {path}: {len(entries)} value(s) for tool: '{tool}'")
    for line in left_out_lines(result.skipped):
        _err(f"left out (unavailable): {line}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pytest-efficientllm",
        description="Compare, merge, report and export pytest-efficientllm run files "
        "(written by pytest --efficiency-json=PATH).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "compare",
        help="per-test, per-metric change of NEW against OLD, with the plugin's verdict rules; exit 1 on regression",
    )
    p.add_argument("old", metavar="OLD.json")
    p.add_argument("new", metavar="NEW.json")
    p.add_argument(
        "--tolerance",
        action="append",
        default=[],
        metavar="METRIC=+N%",
        help="tolerance for a metric (repeatable), as on the marker, e.g. AL=+10%%; it overrides the tolerance "
        "NEW's test ran under on that metric (each test is judged by its own marker's, ini and command line limits)",
    )
    p.add_argument("--mode", choices=("fail", "warn"), default="fail", help="warn: report regressions, exit 0")
    p.add_argument("-v", "--verbose", action="store_true", help="list every verdict, the passing and skipped too")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("merge", help="combine shards from several machines or CI jobs into one run file")
    p.add_argument("inputs", nargs="+", metavar="RUN.json")
    p.add_argument("-o", "--output", required=True, metavar="ALL.json")
    p.add_argument(
        "--allow-mixed-profiles",
        action="store_true",
        help="merge records from different hardware (reports rank each hardware separately)",
    )
    p.add_argument(
        "--allow-duplicates",
        action="store_true",
        help="keep every result of a test that appears in several inputs with different results",
    )
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser("report", help="render a run file as .html, .md or .json (by the output's extension)")
    p.add_argument("input", metavar="RUN.json")
    p.add_argument("-o", "--output", required=True, metavar="report.html|report.md|report.json")
    p.add_argument(
        "--baseline",
        metavar="OLD.json",
        help="show verdicts against this run (the compare command's rules) instead of the recorded ones",
    )
    p.add_argument("--tolerance", action="append", default=[], metavar="METRIC=+N%", help="as for compare")
    p.add_argument("--mode", choices=("fail", "warn"), default="fail", help="as for compare")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser(
        "export-benchmark-action",
        help="github-action-benchmark JSON: customSmallerIsBetter and customBiggerIsBetter files",
    )
    p.add_argument("input", metavar="RUN.json")
    p.add_argument("--smaller", metavar="FILE", help="write lower-is-better values here (tool: customSmallerIsBetter)")
    p.add_argument("--bigger", metavar="FILE", help="write higher-is-better values here (tool: customBiggerIsBetter)")
    p.add_argument(
        "--metrics",
        metavar="A,B,...",
        help="metric names to export (default: the study's six, "
        "the measures beside them, latency p50, TTFT, TPOT and quality scores)",
    )
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("export-bencher", help="Bencher Metric Format (BMF) JSON, for `bencher run --adapter json`")
    p.add_argument("input", metavar="RUN.json")
    p.add_argument("-o", "--output", required=True, metavar="BMF.json")
    p.add_argument("--metrics", metavar="A,B,...", help="metric names to export (default: as export-benchmark-action)")
    p.set_defaults(func=cmd_export_bencher)

    p = sub.add_parser(
        "ab",
        help="measure BASE and HEAD (git revisions or folders) in alternating fresh processes on this machine "
        "and judge HEAD against BASE on the pairs; exit 1 on a regression",
    )
    p.add_argument("base", metavar="BASE")
    p.add_argument("head", metavar="HEAD")
    p.add_argument("pytest_args", nargs="*", metavar="PYTEST_ARG", help="what pytest runs on each side (after --)")
    p.add_argument("--pairs", type=int, default=DEFAULT_PAIRS, help="ABBA pairs of fresh processes (default: 6)")
    p.add_argument(
        "--output", default="efficiency-ab", metavar="DIR", help="run files, ab.md, ab.json (default: efficiency-ab)"
    )
    p.add_argument("--tolerance", action="append", default=[], metavar="METRIC=+N%", help="as for compare")
    p.add_argument("--allow-dirty", action="store_true", help="compare although the work tree has uncommitted changes")
    p.add_argument(
        "--no-confirm",
        action="store_true",
        help="fail a test on its first pairs; by default a test failing on timings alone is measured again in as "
        "many more pairs and fails only if they find it too",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="say which process runs")
    p.set_defaults(func=cmd_ab)
    return parser


def cmd_export_bencher(args: argparse.Namespace) -> int:
    output = _output_path(args.output)
    run = load_run(args.input)
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    data, skipped = bmf(run.records, metrics)
    write_atomic(output, json.dumps(data, indent=1) + "\n")
    _out(f"wrote {output}: {sum(len(m) for m in data.values())} value(s) in {len(data)} benchmark(s), Bencher BMF")
    for line in left_out_lines(skipped):
        _err(f"left out (unavailable): {line}")
    return EXIT_OK


def cmd_ab(args: argparse.Namespace) -> int:
    extra = _limits(args.tolerance)
    out_dir = Path(args.output)
    try:
        comparison = run_comparison(
            args.base,
            args.head,
            list(args.pytest_args),
            out_dir,
            pairs=args.pairs,
            extra_limits=extra,
            allow_dirty=args.allow_dirty,
            confirm=not args.no_confirm,
            progress=_err if args.verbose else lambda line: None,
        )
    except RevisionError as exc:
        raise ReportError(str(exc)) from None
    write_outputs(comparison, out_dir)
    for line in render_lines(comparison):
        _out(line)
    _out(f"run files, ab.md and ab.json: {out_dir}")
    return EXIT_REGRESSION if comparison.failed else EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # `ab BASE HEAD -- pytest args`: what follows `--` is pytest's, options included.
    passed: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, passed = argv[:cut], argv[cut + 1 :]
    args = build_parser().parse_args(argv)
    if passed:
        if args.command != "ab":
            _err(f"{args.command}: takes no arguments after --")
            return EXIT_USAGE
        args.pytest_args = [*args.pytest_args, *passed]
    try:
        return int(args.func(args))
    except ReportError as exc:
        _err(str(exc))
        return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover - `python -m pytest_efficientllm.cli`
    sys.exit(main())
