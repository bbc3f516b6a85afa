"""Docker containers through the Engine API: plain containers (attach) and relay mode."""

from ferry.runtimes.options import CONTAINER_OPTIONS

# The connector-block options Docker containers honour (see ferry.runtimes.resolve).
OPTIONS = CONTAINER_OPTIONS | {"network"}
