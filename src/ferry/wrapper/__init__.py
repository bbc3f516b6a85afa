"""ferry wrapper layer."""
