"""pytest-efficientllm: efficiency as test assertions for LLM techniques.

The pytest plugin lives in `plugin`; everything it uses is plain Python you can call
from a notebook: `Meter` (measure), `Record`/`Metric` (what is recorded), `backend`
(which telemetry), `verdicts` (rules).
"""

from .measure import Meter, Protocol, Work
from .record import Metric, Record

__all__ = ["Meter", "Metric", "Protocol", "Record", "Work"]
__version__ = "0.1.0"
