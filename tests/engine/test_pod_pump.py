"""The pump's process settings, checked in fresh interpreters (they change the whole process)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

# Frees an 8 MiB chunk at the top of the main thread's heap and reports where the program break
# went: `grew` is how much the allocation moved it, `kept` whether freeing left it there.
_PROBE = textwrap.dedent(
    """
    import ctypes, json, sys
    from ferry.engine.pod_pump import keep_heap
    if sys.argv[1] == "keep":
        keep_heap()
    libc = ctypes.CDLL(None)
    libc.sbrk.restype = ctypes.c_void_p
    libc.sbrk.argtypes = [ctypes.c_ssize_t]
    before = libc.sbrk(0)
    chunk = bytearray(8 << 20)
    top = libc.sbrk(0)
    del chunk
    after = libc.sbrk(0)
    print(json.dumps({"grew": top - before, "kept": after == top}))
    """
)


def _probe(mode: str) -> dict[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, mode], capture_output=True, check=True, text=True
    )
    result: dict[str, int] = json.loads(out.stdout)
    return result


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_keep_heap_keeps_freed_chunks_in_the_heap() -> None:
    """Without it an 8 MiB chunk is mapped and unmapped apart from the heap (glibc's default
    threshold is 128 KiB); with it the chunk comes from the heap, which does not shrink when it is
    freed: the next read reuses those pages instead of faulting in new ones."""
    default = _probe("default")
    kept = _probe("keep")
    assert default["grew"] == 0
    assert kept["grew"] > 0
    assert kept["kept"] is True
