"""ferry cli layer."""
