"""The vocabulary every layer shares: records and metrics, units, the metric catalog, limits, device datasheets.

Imports nothing else of the package."""
