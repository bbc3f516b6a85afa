"""ferry engine layer."""
