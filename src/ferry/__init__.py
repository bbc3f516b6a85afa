"""ferry: run Airbyte-Protocol connectors anywhere."""

__version__ = "0.1.0"
