"""The pytest glue: options, per-process state, the marker, the fixture, the hooks, the xdist sides, the summary."""
