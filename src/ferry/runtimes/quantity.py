"""Memory sizes and CPU amounts as connector blocks write them, read by one set of rules (pure).

Memory: a number of bytes, or a number with k, m, g, t, p or e, optionally followed by `i`
and/or `b`: `512m`, `1g`, `512Mi`, `2Gi`, `1gb`. Every unit is binary whatever its case, as in
Docker, so `512m` is 512 MiB, never Kubernetes' 0.512 bytes. CPUs: `0.5`, `2`, or millicores
`500m`. Both the `resources:` block and the `kubernetes:` block's requests/limits read them here;
each runtime then states them in its engine's units. (lightkube's quantity parser follows
Kubernetes' decimal units and would load the Kubernetes client on every Docker run.)
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from ferry.errors import ConfigError

MIN_MEMORY = 1 << 20
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtpe]?)(i?)(b?)\s*$", re.IGNORECASE)
_BINARY_POWER = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5, "e": 6}


def memory_bytes(value: str | int, where: str = "memory") -> int:
    """Bytes of a memory size; at least MIN_MEMORY (nothing runs in less)."""
    text = str(value)
    match = _SIZE.match(text)
    if match is None or (match.group(3) and not match.group(2)):
        raise ConfigError(
            f"{where}: invalid memory {text!r}; use bytes or a size like 512Mi, 2Gi, 512m, 1g"
        )
    size = int(Decimal(match.group(1)) * 1024 ** _BINARY_POWER[match.group(2).lower()])
    if size < MIN_MEMORY:
        raise ConfigError(f"{where}: memory {text!r} is below 1 MiB")
    return size


def cpu_amount(value: str | int | float, where: str = "cpu") -> Decimal:
    """A positive number of CPUs."""
    text = str(value).strip()
    try:
        cpus = Decimal(text[:-1]) / 1000 if text.endswith("m") else Decimal(text)
    except InvalidOperation:
        raise ConfigError(f"{where}: invalid cpu {text!r}; use 0.5, 2 or 500m") from None
    if not cpus.is_finite() or cpus <= 0:
        raise ConfigError(f"{where}: cpu {text!r} must be a positive number of CPUs")
    return cpus
