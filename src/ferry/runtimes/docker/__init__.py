"""Docker containers through the Engine API: plain containers (attach) and relay mode."""

# The connector-block options Docker containers honour (see ferry.runtimes.check_options_apply).
OPTIONS = frozenset({"env", "entrypoint", "pull", "memory", "cpu", "volumes", "relay", "network"})
