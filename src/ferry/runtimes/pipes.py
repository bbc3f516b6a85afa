"""Non-blocking pipe ends for asyncio: a connector's stdout/stderr and stdin, local or a FIFO."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os

PIPE_SIZE = 1 << 20  # Linux's default /proc/sys/fs/pipe-max-size
_F_SETPIPE_SZ = 1031


def enlarge_pipe(fd: int) -> None:
    with contextlib.suppress(OSError):  # not Linux, or a lower pipe-max-size: keep the default
        fcntl.fcntl(fd, _F_SETPIPE_SZ, PIPE_SIZE)


class PipeReader:
    """Reads a non-blocking pipe fd. After the process has exited, what is still buffered is
    returned and then EOF, even if a grandchild holds the pipe open (no hang after exit)."""

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self._fd = fd
        self._exited = False
        self._waiter: asyncio.Future[None] | None = None

    async def read(self, n: int) -> bytes:
        while True:
            if self._fd < 0:
                return b""
            try:
                data = os.read(self._fd, n)
            except BlockingIOError:
                if self._exited:
                    self.close()
                    return b""
                await self._wait_readable()
                continue
            if not data:
                self.close()
            return data

    async def _wait_readable(self) -> None:
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        loop.add_reader(self._fd, self._wake)
        try:
            await waiter
        finally:
            self._waiter = None
            if self._fd >= 0:
                loop.remove_reader(self._fd)

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def process_exited(self) -> None:
        self._exited = True
        self._wake()

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            if self._waiter is not None:
                asyncio.get_running_loop().remove_reader(fd)
            os.close(fd)
            self._wake()


class PipeWriter:
    """Writes to the connector's stdin; waits while the pipe is full (backpressure).

    `write` raises BrokenPipeError once the connector is gone or closed its stdin; `close`
    never raises (how the connector ended is learnt from `wait`)."""

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self._fd = fd
        self._waiter: asyncio.Future[None] | None = None

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self._fd < 0:
                raise BrokenPipeError("the connector's stdin is closed")
            try:
                written = os.write(self._fd, view)
            except BlockingIOError:
                await self._wait_writable()
                continue
            view = view[written:]

    async def _wait_writable(self) -> None:
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        fd = self._fd
        loop.add_writer(fd, self._wake)
        try:
            await waiter
        finally:
            self._waiter = None
            loop.remove_writer(fd)

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            if self._waiter is not None:
                asyncio.get_running_loop().remove_writer(fd)
                self._wake()
            with contextlib.suppress(OSError):
                os.close(fd)
