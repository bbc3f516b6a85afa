"""Local connectors: processes on this machine, installed into their own venvs."""
