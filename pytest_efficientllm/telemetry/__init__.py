"""Telemetry sources, one module per source.

Each source is a `Probe` (see `base`): opened just before the first timed round and closed
after the last one, it reports `Metric`s with their source and method. Probes never run
inside a timed round; samplers run in a thread only while a window is open.

A leaf: it imports only `core` (the record types, units, device datasheets), never the
layers that use it, so a source can be read and tested alone.
"""
