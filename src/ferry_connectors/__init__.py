"""First-party connectors: each is a standalone program speaking the Airbyte Protocol."""
