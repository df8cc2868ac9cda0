"""The dtype shift behind a change of a counted byte or FLOP metric, named in its verdict.

An upcast from bf16 to fp32 doubles the bytes of the work it touches; the verdict on
`bytes_accessed` should say so ("bf16 -> fp32: 97% of bytes were bf16, now 0%") rather than
leave the reader to diff the `bytes_share:*` metrics of the two records.
"""

from __future__ import annotations

from pytest_efficientllm.core.record import Record

# Counted metrics whose change the dtype mix can explain, and the share family that shows it.
SHARES = {
    "bytes_accessed": ("bytes_share:", "bytes"),
    "allocated_bytes": ("bytes_share:", "bytes"),
    "tensor_peak_bytes": ("bytes_share:", "bytes"),
    "flops": ("flops_share:", "FLOPs"),
}
# The total each share family divides.
TOTALS = {"bytes_share:": "bytes_accessed", "flops_share:": "flops"}
# The least move of a dtype's share (absolute) that a message names as a shift.
SHIFT_MIN = 0.05


def dtype_shift(baseline: Record, current: Record, name: str) -> str:
    """The dtype shift behind a change of a counted byte or FLOP metric, from the share metrics of
    both records: "bf16 -> fp32: 97% of bytes were bf16, now 0%"; "" when none shows one."""
    if name not in SHARES:
        return ""
    prefix, what = SHARES[name]

    def shares(record: Record) -> dict[str, float]:
        return {
            n[len(prefix) :]: float(m.value)
            for n, m in record.metrics.items()
            if n.startswith(prefix) and m.value is not None
        }

    b, c = shares(baseline), shares(current)
    if not b or not c:
        return ""
    moved = {d: c.get(d, 0.0) - b.get(d, 0.0) for d in sorted(set(b) | set(c))}
    lost = min(moved, key=lambda d: moved[d])
    gained = max(moved, key=lambda d: moved[d])
    if moved[lost] > -SHIFT_MIN or moved[gained] < SHIFT_MIN:
        return ""
    # A share also falls when other dtypes' work grows around it (an fp32 adapter path, a
    # recomputation in fp32): a shift is the cause only where the lost dtype's own work fell.
    total = TOTALS[prefix]
    b_total, c_total = baseline.metrics.get(total), current.metrics.get(total)
    if b_total is None or c_total is None or b_total.value is None or c_total.value is None:
        return ""
    if c.get(lost, 0.0) * float(c_total.value) >= b.get(lost, 0.0) * float(b_total.value):
        return ""
    return f"{lost} -> {gained}: {b.get(lost, 0.0):.0%} of {what} were {lost}, now {c.get(lost, 0.0):.0%}"
