"""Secrets stay masked in what ferry logs to the application's own handlers, and in errors.

The CLI masks in its handler; a library has no handler of its own, so the masking filter goes on
ferry's loggers: a logger's filters run before any handler sees the record. Loggers are created
as modules and connectors need them, so every API call covers the ones that exist by then plus
the connector loggers it is about to use.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from ferry.engine.secrets import MaskingFilter, mask
from ferry.errors import FerryError

_FILTER = MaskingFilter()


def mask_ferry_logs(*connector_loggers: str) -> None:
    existing = [
        name
        for name in list(logging.Logger.manager.loggerDict)
        if name == "ferry" or name.startswith("ferry.")
    ]
    for name in [*existing, *connector_loggers]:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


@contextlib.contextmanager
def secrets_masked() -> Iterator[None]:
    """A FerryError raised to the application is masked as the CLI masks what it prints."""
    try:
        yield
    except FerryError as error:
        error.message = mask(error.message)
        error.args = (error.message,)
        raise
