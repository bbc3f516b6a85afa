"""Faults of the test connectors that happen once: on the first run of a connection only."""

import os


def fault(config, name):
    """The value of fault `name` in `config`, or None once the file `config["once"]` exists
    (it is created when a fault is first taken, so a re-run goes without it)."""
    value = config.get(name)
    marker = config.get("once")
    if value is None or not marker:
        return value
    if os.path.exists(marker):
        return None
    open(marker, "w").close()
    return value
