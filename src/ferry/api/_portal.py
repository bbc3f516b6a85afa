"""Blocking calls into ferry's asyncio code, from any thread (a notebook's running loop too).

Each blocking call gets an event loop in a thread of its own, like kr8s' and httpx's sync
clients: `asyncio.run` would refuse to run where a loop is already running (Jupyter), and the
loop must outlive one call while a read's records are iterated.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Coroutine, Generator
from types import TracebackType
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="ferry", daemon=True)
        self._thread.start()

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run `coroutine` in the loop and wait; an interrupt (Ctrl-C) cancels it, and waits for
        it to wind down (connectors stopped) before going up."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            return future.result()
        except BaseException:
            if not future.done():
                future.cancel()
                asyncio.run_coroutine_threadsafe(_settle(), self.loop).result()
            raise

    def iterate(self, items: AsyncIterator[T]) -> Generator[T, None, None]:
        """The items of an async iterator; closing this generator closes that one."""
        try:
            while found := self.call(_next(items)):
                yield found[0]
        finally:
            aclose = getattr(items, "aclose", None)
            if aclose is not None:
                self.call(aclose())

    def close(self) -> None:
        """Like the end of `asyncio.run`: tasks left behind (a sibling of a task that failed)
        are cancelled and awaited, so their connectors are stopped, then the loop closes."""
        asyncio.run_coroutine_threadsafe(_finish_all(), self.loop).result()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()

    def __enter__(self) -> LoopThread:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


async def _next(items: AsyncIterator[T]) -> list[T]:
    """[the next item], or [] at the end."""
    try:
        return [await anext(items)]
    except StopAsyncIteration:
        return []


async def _finish_all() -> None:
    tasks = asyncio.all_tasks() - {asyncio.current_task()}
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.get_running_loop().shutdown_asyncgens()


async def _settle() -> None:
    """Let cancelled tasks run their cleanup: every other task of the loop is waited for."""
    tasks = asyncio.all_tasks() - {asyncio.current_task()}
    if tasks:
        await asyncio.wait(tasks)
