"""The live table of several syncs: a row per connection, in the order given, with its status."""

from __future__ import annotations

from rich.console import Console

from ferry.cli.progress import ProgressBoard


def rendered(board: ProgressBoard) -> list[str]:
    console = Console(record=True, width=120)
    console.print(board.table())
    return [line.rstrip() for line in console.export_text().splitlines()]


def test_a_row_per_connection_with_its_status() -> None:
    board = ProgressBoard(["zeta", "alpha", "mid"], enabled=False)
    board.set_status("alpha", "running")
    board.set_status("zeta", "failed")
    lines = rendered(board)
    assert lines[0].split()[:3] == ["connection", "┃", "status"]
    rows = [line.split()[:3] for line in lines[2:]]
    assert rows == [["zeta", "│", "failed"], ["alpha", "│", "running"], ["mid", "│", "waiting"]]
