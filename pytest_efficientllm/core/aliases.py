"""Names users are likely to type for catalog metrics (`latency` for `AL`).

Apart from the catalog so that a record, which the catalog builds on, can answer to them too.
"""

from __future__ import annotations

ALIASES: dict[str, str] = {
    "latency": "AL",
    "memory": "AMU",
    "average_memory": "AMU",
    "throughput": "tokens_per_s",
    "sample_throughput": "samples_per_s",
    "power": "AEC",
    "compute_utilization": "PCU",
    "compression": "MCR",
}
