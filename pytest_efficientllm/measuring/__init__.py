"""Measuring: the telemetry backend chosen once per session, the measuring loop (`Meter`), derived metrics,
calibration, the host fingerprint and the process layout. Imports `core` and `telemetry` only."""
