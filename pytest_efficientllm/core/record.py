"""The one record type: what a measured test produced.

The same `Record` flows from the measuring loop, across the xdist wire (as `to_dict()`
output), into the baseline store, the JSON export and the reports. It is plain data:
`Record.from_dict(record.to_dict()) == record` for every record.

A `Metric` never hides where its number came from: every value carries its unit, which
direction is better and its source —

* ``measured``: a hardware or kernel counter or a clock;
* ``counted``: an exact count (bytes, FLOPs, parameters, tokens);
* ``estimated``: the output of a model, named in ``method``.

Unavailable metrics are kept with ``value=None`` and a ``note`` saying why, never as 0.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from pytest_efficientllm.core.aliases import ALIASES

SCHEMA_VERSION = 1

Source = Literal["measured", "counted", "estimated"]
Direction = Literal["lower", "higher", "info"]

SOURCES: tuple[str, ...] = ("measured", "counted", "estimated")
DIRECTIONS: tuple[str, ...] = ("lower", "higher", "info")


class SchemaError(ValueError):
    """A serialised record that this version cannot read."""


@dataclass(frozen=True)
class Metric:
    """One named value with its unit, better-direction and provenance.

    ``samples`` holds the raw per-round values where the metric has them (latency,
    per-round throughput), so comparisons can use robust statistics over rounds;
    ``history`` (baselines only) the medians of earlier baseline runs, oldest first, so
    the gate can tell a regression from run-to-run noise.
    """

    name: str
    value: float | None
    unit: str
    direction: Direction
    source: Source
    method: str
    samples: tuple[float, ...] = ()
    note: str = ""
    history: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"metric {self.name!r}: source must be one of {SOURCES}, got {self.source!r}")
        if self.direction not in DIRECTIONS:
            raise ValueError(f"metric {self.name!r}: direction must be one of {DIRECTIONS}, got {self.direction!r}")
        if self.source == "estimated" and "estimate" not in self.method:
            raise ValueError(f"metric {self.name!r}: an estimated value must name its model in method")

    @property
    def available(self) -> bool:
        return self.value is not None

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["samples"] = list(self.samples)
        out["history"] = list(self.history)
        if not self.history:
            del out["history"]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Metric:
        data = dict(data)
        data["samples"] = tuple(data.get("samples", ()))
        data["history"] = tuple(data.get("history", ()))
        return cls(**data)


def json_safe_verdict(verdict: dict[str, Any]) -> dict[str, Any]:
    """A verdict's dict as it is written to a JSON file: a `change` that is not finite becomes null.

    JSON has no infinity, and a change from 0 is +inf (no ratio): strict readers (jq,
    JavaScript) refuse Python's `Infinity`. The message still says "from 0"."""
    change = verdict.get("change")
    if isinstance(change, float) and not math.isfinite(change):
        return {**verdict, "change": None}
    return verdict


@dataclass
class Record:
    """Everything one measured test (or one rank of it) produced.

    ``settings`` holds what was asked (rounds, warmup, workload kind, threads, technique
    settings such as LoRA rank); ``fingerprint`` what the hardware and software were;
    ``ranks`` the per-rank records of a distributed test, of which this one is the
    aggregate (empty for single-process tests); ``verdicts`` the gate's verdicts on
    this record as plain dicts (``{"metric", "status", "message", ...}``), so reports
    and merged runs show them without re-deriving; ``confirmations`` the records of the
    same test measured again in fresh processes before the gate decided (`confirm`),
    raw rounds included, so a verdict's evidence is all in the run file.
    """

    nodeid: str
    profile: str
    metrics: dict[str, Metric] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    fingerprint: dict[str, Any] = field(default_factory=dict)
    outcome: str = "passed"
    worker: str = ""
    rank: int | None = None
    world_size: int = 1
    ranks: list[Record] = field(default_factory=list)
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    confirmations: list[Record] = field(default_factory=list)
    created: str = ""
    schema: int = SCHEMA_VERSION

    def __getitem__(self, name: str) -> Metric:
        """The metric of a catalog name or of an alias the marker takes (`run["latency"]` is `AL`)."""
        found = self.metrics.get(name) or self.metrics.get(ALIASES.get(name, ""))
        if found is None:
            known = ", ".join(sorted(self.metrics))
            raise KeyError(f"no metric {name!r} in the record of {self.nodeid}; it has: {known}")
        return found

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in self.metrics or ALIASES.get(name) in self.metrics)

    def add(self, metric: Metric) -> None:
        self.metrics[metric.name] = metric

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "nodeid": self.nodeid,
            "profile": self.profile,
            "outcome": self.outcome,
            "worker": self.worker,
            "rank": self.rank,
            "world_size": self.world_size,
            "created": self.created,
            "settings": self.settings,
            "fingerprint": self.fingerprint,
            "metrics": {name: m.to_dict() for name, m in sorted(self.metrics.items())},
            "ranks": [r.to_dict() for r in self.ranks],
            "verdicts": [json_safe_verdict(v) for v in self.verdicts],
            "confirmations": [r.to_dict() for r in self.confirmations],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Record:
        if not isinstance(data, dict):
            raise SchemaError(f"a record must be a JSON object, got {type(data).__name__}")
        schema = data.get("schema")
        if not isinstance(schema, int):
            raise SchemaError("record has no integer 'schema' field: not a pytest-efficientllm record")
        if schema > SCHEMA_VERSION:
            raise SchemaError(
                f"record schema {schema} is newer than this pytest-efficientllm understands "
                f"({SCHEMA_VERSION}); upgrade the plugin"
            )
        try:
            return cls(
                nodeid=data["nodeid"],
                profile=data["profile"],
                metrics={k: Metric.from_dict(v) for k, v in data.get("metrics", {}).items()},
                settings=dict(data.get("settings", {})),
                fingerprint=dict(data.get("fingerprint", {})),
                outcome=data.get("outcome", "passed"),
                worker=data.get("worker", ""),
                rank=data.get("rank"),
                world_size=int(data.get("world_size", 1)),
                ranks=[cls.from_dict(r) for r in data.get("ranks", [])],
                verdicts=list(data.get("verdicts", [])),
                confirmations=[cls.from_dict(r) for r in data.get("confirmations", [])],
                created=data.get("created", ""),
                schema=schema,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise SchemaError(f"malformed record {data.get('nodeid', '?')!r}: {exc}") from exc
