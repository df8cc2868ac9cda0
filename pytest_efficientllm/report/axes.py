"""Where a record belongs in a report: its axis, workload, technique, model and scale.

Everything here is derived from the record itself (node id and settings), never
guessed from outside, so a merged run from several machines sorts the same way.
"""

from __future__ import annotations

import re

from pytest_efficientllm.core.devices import widest_vector_extension
from pytest_efficientllm.core.record import Record

# Axis of a suite module, matched on the module's file name (first match wins).
# The labels are the study's axes (docs/suites.md); anything else is "other".
AXES: tuple[tuple[str, str], ...] = (
    (r"^test_(attention|moe|architecture)", "attention / MoE"),
    (r"^test_(finetune|peft)", "PEFT"),
    (r"^test_(quantization|quant)", "quantization"),
    (r"^test_(vision|vlm)", "vision"),
)
OTHER = "other"
AXIS_ORDER: tuple[str, ...] = tuple(label for _, label in AXES) + (OTHER,)

_PARAM = re.compile(r"\[(.*)\]$")


def module_name(nodeid: str) -> str:
    """File name of the test module without directory or '.py' ('suites/test_quant.py::t' -> 'test_quant')."""
    path = nodeid.split("::", 1)[0]
    name = path.rsplit("/", 1)[-1]
    return name[:-3] if name.endswith(".py") else name


def axis_of(nodeid: str) -> str:
    module = module_name(nodeid)
    for pattern, label in AXES:
        if re.search(pattern, module):
            return label
    return OTHER


def function_of(nodeid: str) -> str:
    """The test function (with its class) without the parametrize id: the workload's name."""
    tail = nodeid.split("::", 1)[1] if "::" in nodeid else nodeid
    return _PARAM.sub("", tail)


def technique_of(nodeid: str) -> str:
    """The parametrize id ('...::test_prefill[gqa]' -> 'gqa'); the function name when not parametrized."""
    match = _PARAM.search(nodeid)
    return match.group(1) if match else function_of(nodeid)


def setting(record: Record, name: str) -> str | None:
    """A technique setting such as the model or scale, as text; None when the record does not name it."""
    value = record.settings.get(name)
    return None if value in (None, "") else str(value)


def hardware_label(record: Record) -> str:
    """What a leaderboard may rank together: one profile on one device model.

    Ranks across different hardware would compare machines, not techniques.
    """
    fp = record.fingerprint
    device = fp.get("device_name") or fp.get("gpu_name")
    if device:
        return f"{record.profile} · {device}"
    # The CPU is the device: its model, and the widest vector extension it has, as the gate tells
    # CPUs apart (an "AMD EPYC" with AVX-512 and one without are two machines).
    widest = widest_vector_extension(str(fp.get("cpu_isa") or ""))
    return f"{record.profile} · {fp.get('cpu_model') or 'unknown device'}" + (f" ({widest})" if widest else "")
