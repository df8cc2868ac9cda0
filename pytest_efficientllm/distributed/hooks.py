"""pytest hooks of distributed measurement (registered by `plugin` through `pytest_plugins`)."""
