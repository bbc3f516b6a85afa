"""Secrets: config values of spec fields marked `airbyte_secret: true`, masked everywhere.

`register_secrets(spec, config)` adds a config's secrets to the process-wide `masker`; the CLI
installs `MaskingFilter(masker)` on its log handlers and masks errors and output with `mask`, so
no log line (a connector's included), error message or printed result shows a secret.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import traceback
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from ferry.protocol.messages import ConnectorSpecification

MASK = "**********"
_MAX_DEPTH = 64
_COMBINATORS = ("oneOf", "anyOf", "allOf")


def collect_secrets(schema: Mapping[str, Any], config: Any) -> set[str]:
    """The values in `config` that `schema` marks as secret, at any depth.

    Walks properties, additional/pattern properties, array items, local `$ref`s and every branch
    of oneOf/anyOf/allOf (masking too much is harmless; too little is not)."""
    found: set[str] = set()
    _walk(schema, config, schema, found, 0)
    return found


def _walk(schema: Any, value: Any, root: Mapping[str, Any], found: set[str], depth: int) -> None:
    if not isinstance(schema, Mapping) or depth > _MAX_DEPTH:
        return
    depth += 1
    if schema.get("airbyte_secret") is True:
        _add_leaves(value, found)
    for alternative in _alternatives(schema, root):
        _walk(alternative, value, root, found, depth)
    for sub_schema, item in _children(schema, value):
        _walk(sub_schema, item, root, found, depth)


def _alternatives(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Iterator[Any]:
    """Schemas that apply to the same value: a local `$ref`'s target, every oneOf/anyOf/allOf
    branch."""
    ref = schema.get("$ref")
    if isinstance(ref, str):
        yield _local_ref(root, ref)
    for keyword in _COMBINATORS:
        yield from schema.get(keyword) or ()


def _children(schema: Mapping[str, Any], value: Any) -> Iterator[tuple[Any, Any]]:
    """(schema, value) of each property of an object value, or each item of an array."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            for sub_schema in _property_schemas(schema, str(key)):
                yield sub_schema, item
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield _item_schema(schema, index), item


def _property_schemas(schema: Mapping[str, Any], key: str) -> list[Any]:
    properties = schema.get("properties")
    if isinstance(properties, Mapping) and key in properties:
        return [properties[key]]
    patterns = schema.get("patternProperties")
    matched = [
        sub
        for pattern, sub in (patterns.items() if isinstance(patterns, Mapping) else ())
        if _search(pattern, key)
    ]
    return matched or [schema.get("additionalProperties")]


def _search(pattern: str, key: str) -> bool:
    try:
        return re.search(pattern, key) is not None
    except re.error:
        return False


def _item_schema(schema: Mapping[str, Any], index: int) -> Any:
    items = schema.get("items")
    if isinstance(items, list):  # tuple validation (draft 7)
        return items[index] if index < len(items) else schema.get("additionalItems")
    return items


def _local_ref(root: Mapping[str, Any], ref: str) -> Any:
    """`#/definitions/x` within the spec; anything else is not followed."""
    if not ref.startswith("#"):
        return None
    node: Any = root
    for part in ref.lstrip("#").strip("/").split("/"):
        if not part:
            continue
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _add_leaves(value: Any, found: set[str]) -> None:
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, str | int | float):
        text = str(value)
        if text:
            found.add(text)
    elif isinstance(value, Mapping):
        for item in value.values():
            _add_leaves(item, found)
    elif isinstance(value, list):
        for item in value:
            _add_leaves(item, found)


class SecretMasker:
    """Replaces every known secret, and the forms it takes inside JSON or a repr, with MASK."""

    def __init__(self) -> None:
        self._forms: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()

    def add(self, secret: str) -> None:
        self.add_all([secret])

    def add_all(self, secrets: Iterable[str]) -> None:
        forms = {form for secret in secrets if secret for form in _forms_of(secret) if form}
        with self._lock:
            if forms <= self._forms:
                return
            self._forms |= forms
            # Longest first, so a secret containing another is masked whole.
            ordered = sorted(self._forms, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(form) for form in ordered))

    def mask(self, text: str) -> str:
        pattern = self._pattern
        return text if pattern is None else pattern.sub(MASK, text)

    def clear(self) -> None:
        with self._lock:
            self._forms.clear()
            self._pattern = None


def _forms_of(secret: str) -> set[str]:
    return {
        secret,
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        repr(secret)[1:-1],
    }


# The process-wide masker: what the CLI's log handlers, error output and results go through.
masker = SecretMasker()


def register_secrets(spec: ConnectorSpecification, config: Mapping[str, Any]) -> set[str]:
    """Mask, from now on, the secrets of `config` according to `spec`; returns them."""
    secrets = collect_secrets(spec.connectionSpecification, config)
    masker.add_all(secrets)
    return secrets


def mask(text: str) -> str:
    return masker.mask(text)


def masked_config(config: Any, spec: ConnectorSpecification | None) -> Any:
    """A copy of `config` for display: the spec's secret values replaced by MASK; without a
    spec, every value (nothing tells which ones are secret)."""
    secrets = None if spec is None else collect_secrets(spec.connectionSpecification, config)

    def hide(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {key: hide(item) for key, item in value.items()}
        if isinstance(value, list):
            return [hide(item) for item in value]
        if isinstance(value, bool) or value is None:
            return value
        return MASK if secrets is None or str(value) in secrets else value

    return hide(config)


class MaskingFilter(logging.Filter):
    """Masks secrets in a record's message, exception text and stack; install it on handlers."""

    def __init__(self, secret_masker: SecretMasker | None = None) -> None:
        super().__init__()
        self.masker = secret_masker or masker

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            message = str(record.msg)
        record.msg = self.masker.mask(message)
        record.args = None
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            rendered = "".join(traceback.format_exception(record.exc_info[1])).rstrip("\n")
            record.exc_text = self.masker.mask(rendered)
        elif record.exc_text:
            record.exc_text = self.masker.mask(record.exc_text)
        if record.stack_info:
            record.stack_info = self.masker.mask(record.stack_info)
        return True
