"""The hardware and software a run's records came from, flattened for display."""

from __future__ import annotations

import json
from typing import Any

from pytest_efficientllm.storage.runfile import Run


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """{'packages': {'torch': '2.13'}} -> {'packages.torch': '2.13'}; other values as compact text."""
    out: dict[str, str] = {}
    for key in sorted(data):
        value = data[key]
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value if isinstance(value, str) else json.dumps(value)
    return out


def run_fingerprints(run: Run) -> list[tuple[str, dict[str, str]]]:
    """(label, flattened fingerprint) per session of the run.

    Run files list their sessions in `runs`; a file without them (hand-made, or an older
    writer) falls back to the distinct fingerprints its records carry, so nothing is hidden.
    """
    out = []
    for i, entry in enumerate(run.runs):
        label = str(entry.get("label") or entry.get("started") or f"run {i + 1}")
        info = {k: v for k, v in entry.items() if k not in ("fingerprint", "label")}
        out.append((label, flatten({**info, **dict(entry.get("fingerprint") or {})})))
    if out:
        return out
    seen: list[dict[str, str]] = []
    for record in run.records:
        flat = flatten({"profile": record.profile, **record.fingerprint})
        if flat not in seen:
            seen.append(flat)
    return [(f"fingerprint {i + 1} (from the records)", fp) for i, fp in enumerate(seen)]
