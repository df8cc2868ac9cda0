"""pytest hooks of the reports (registered by `plugin` through `pytest_plugins`)."""
