"""pytest-efficientllm: efficiency as test assertions for LLM techniques.

The pytest plugin's entry point is `plugin`; everything below the pytest glue (`glue/`) is
plain Python you can call from a notebook: `Meter` (measure, with a backend from
`measuring.backends`), `Record`/`Metric` (what is recorded), `judging.evaluate` (the gate's
rules). docs/architecture.md maps the packages.
"""

from pytest_efficientllm.core.record import Metric, Record
from pytest_efficientllm.measuring.meter import MeasureProtocol, Meter, Work

__all__ = ["Meter", "Metric", "MeasureProtocol", "Record", "Work"]
__version__ = "0.1.0"
