"""Every name the README's "Python API" section documents exists in `import ferry` — and the
signatures it spells out are the real ones. Imports nothing but `ferry`."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import ferry

README = Path(__file__).resolve().parents[2] / "README.md"

# `ferry.X`, `ferry.X.y`; not inside a word or a path (`sqlite:///ferry.db`), nor a logger
# pattern (`ferry.connector.*`).
DOTTED = re.compile(r"(?<![\w/.\[-])ferry((?:\.[A-Za-z_]\w*)+)(?!\w|\.\*)")
# `ferry.name(arguments)` written out in backticks, possibly across lines.
SIGNATURE = re.compile(r"`ferry\.(\w+)\(([^`]*?)\)(?: -> [^`]*)?`", re.DOTALL)


def api_section() -> str:
    text = README.read_text()
    start = text.index("\n## Python API\n")
    return text[start : text.index("\n## ", start + 1)]


def resolve(path: str) -> Any:
    found: Any = ferry
    for part in path.strip(".").split("."):
        assert hasattr(found, part), f"README documents ferry{path}, which is missing"
        found = getattr(found, part)
    return found


def test_every_documented_name_exists() -> None:
    section = api_section()
    names = {match.group(1) for match in DOTTED.finditer(section)}
    assert len(names) > 20  # the section was found and parsed
    for name in names:
        resolve(name)


def test_documented_signatures_match() -> None:
    checked = 0
    for name, arguments in SIGNATURE.findall(api_section()):
        documented = [
            part.split("=")[0].strip()
            for part in " ".join(arguments.split()).split(",")
            if part.strip() not in ("*", "")
        ]
        target = resolve("." + name)
        real = [p for p in inspect.signature(target).parameters if p != "self"]
        assert documented == real, f"ferry.{name}: README says {documented}, code has {real}"
        checked += 1
    assert checked >= 3
