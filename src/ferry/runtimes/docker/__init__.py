"""Docker containers through the Engine API: plain containers (attach) and relay mode."""
