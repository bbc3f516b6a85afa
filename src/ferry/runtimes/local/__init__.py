"""Local connectors: processes on this machine, installed into their own venvs."""

# The connector-block options a local process honours (see ferry.runtimes.resolve).
OPTIONS = frozenset({"env"})
