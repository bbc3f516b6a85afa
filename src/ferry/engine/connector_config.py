"""The config each connector of a connection runs with, and the updates connectors send.

A connector may send a CONTROL `CONNECTOR_CONFIG` message carrying its whole updated config:
OAuth APIs with single-use refresh tokens hand out a new token on every use, and the old one
stops working. Like Airbyte's platform, ferry keeps that config at once (before it reads the
connector's next line) and runs every later command of the connection with it, whether or not
the command that received it succeeds.

The connection file stays the source of truth: the stored config remembers a fingerprint of the
file's config it replaced, and once the file's config differs (the user edited it), the file
wins and the stored config is discarded.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from typing import Any

from ferry.engine.secrets import register_secrets
from ferry.protocol.messages import CONTROL, AirbyteMessage, ConnectorSpecification
from ferry.store.base import ConfigRole, Store

logger = logging.getLogger("ferry.config")

CONNECTOR_CONFIG = "CONNECTOR_CONFIG"


def config_fingerprint(config: Mapping[str, Any]) -> str:
    """A hash of a config's canonical JSON: equal configs, equal fingerprints."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def updated_config(message: AirbyteMessage) -> dict[str, Any] | None:
    """The config a CONTROL CONNECTOR_CONFIG message carries, else None."""
    control = message.control
    if message.type != CONTROL or control is None or control.type != CONNECTOR_CONFIG:
        return None
    if control.connectorConfig is None or not isinstance(control.connectorConfig.config, dict):
        return None
    return dict(control.connectorConfig.config)


class ConnectorConfigs:
    """The configs of one connection's two connectors: the file's, or what a connector sent.

    `specs` tell which values are secrets: every config this object is given, hands out or
    receives has them masked in ferry's output from then on.
    """

    def __init__(
        self,
        store: Store,
        connection: str,
        file_configs: Mapping[ConfigRole, dict[str, Any]],
        specs: Mapping[ConfigRole, ConnectorSpecification],
    ) -> None:
        self.store = store
        self.connection = connection
        self.file_configs = dict(file_configs)
        self.specs = dict(specs)
        self.fingerprints = {role: config_fingerprint(c) for role, c in file_configs.items()}
        for role, config in self.file_configs.items():
            self._mask(role, config)

    def current(self, role: ConfigRole) -> dict[str, Any]:
        """The config `role` runs with now."""
        stored = self.store.load_connector_config(self.connection, role)
        if stored is None:
            return self.file_configs[role]
        if stored.file_fingerprint != self.fingerprints[role]:
            logger.warning(
                "%s: the %s config in the connection file changed since the connector updated "
                "it; the file wins, the stored config is discarded",
                self.connection,
                role,
            )
            self.store.reset_connector_config(self.connection, role)
            return self.file_configs[role]
        self._mask(role, stored.config)
        return stored.config

    def update(self, role: ConfigRole, config: dict[str, Any]) -> None:
        """Keep the config `role` sent; every later command of the connection runs with it."""
        self._mask(role, config)
        self.store.save_connector_config(self.connection, role, config, self.fingerprints[role])
        logger.info(
            "%s: the %s sent an updated config (sha256 %s); stored, later commands use it",
            self.connection,
            role,
            config_fingerprint(config)[:12],
        )

    def _mask(self, role: ConfigRole, config: Mapping[str, Any]) -> None:
        spec = self.specs.get(role)
        if spec is not None:
            register_secrets(spec, config)
