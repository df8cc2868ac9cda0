"""pytest-efficientllm: efficiency as test assertions for LLM techniques.

The pytest plugin lives in `plugin`; everything it uses is plain Python you can call
from a notebook: `Meter` (measure), `Record`/`Metric` (what is recorded), `backend`
(which telemetry), `verdicts` (rules).
"""

from pytest_efficientllm.core.record import Metric, Record
from pytest_efficientllm.measuring.meter import MeasureProtocol, Meter, Work

__all__ = ["Meter", "Metric", "MeasureProtocol", "Record", "Work"]
__version__ = "0.1.0"
