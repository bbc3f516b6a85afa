"""ferry store layer."""
