"""Where a bulk body's checked rows wait for COPY: in memory while the process's budget allows,
then in a temporary file written off the event loop; and how many bodies may be spooled at once.

One `Spools` per process bounds what bulk uploads can hold whatever clients do: at most
`max_uploads` bodies at a time (one more is a 503 with `Retry-After`, before its body is read),
at most `memory_bytes` of their rows in memory together (past it, a body continues in a file), and
so at most `max_uploads` times the largest bulk body on disk.
"""

from __future__ import annotations

import asyncio
import io
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

from prometheus_client import Gauge

from sophia.core.errors import Unavailable

FILE_WRITE_BYTES = 1_048_576
"""Rows gathered before one write to a spool's file (each write is a hop to a thread)."""

SPOOLED_BYTES = Gauge(
    "sophia_bulk_spooled_bytes", "Bytes of bulk rows waiting for COPY", ["where"], multiprocess_mode="livesum"
)
SPOOLING_UPLOADS = Gauge(
    "sophia_bulk_spooling_uploads", "Bulk bodies being spooled", multiprocess_mode="livesum"
)


class Spools:
    """The process's budget for spooled bulk bodies (see the module's docstring)."""

    def __init__(self, *, max_uploads: int, memory_bytes: int) -> None:
        self.max_uploads = max_uploads
        self.memory_bytes = memory_bytes
        self.uploads = 0
        self.in_memory = 0

    @contextmanager
    def spool(self) -> Iterator[Spool]:
        """A spool for one body, released on leaving; `Unavailable` while `max_uploads` are taken."""
        if self.uploads >= self.max_uploads:
            raise Unavailable(
                f"{self.max_uploads} bulk uploads are in progress, the most this server takes at "
                "once; retry shortly. Nothing was written.",
                retry_after_s=1,
            )
        self.uploads += 1
        SPOOLING_UPLOADS.inc()
        spool = Spool(self)
        try:
            yield spool
        finally:
            spool.close()
            self.uploads -= 1
            SPOOLING_UPLOADS.dec()

    def reserve(self, size: int) -> bool:
        """Take `size` bytes of the memory budget if they fit."""
        if self.in_memory + size > self.memory_bytes:
            return False
        self.in_memory += size
        SPOOLED_BYTES.labels("memory").inc(size)
        return True

    def release(self, size: int) -> None:
        self.in_memory -= size
        SPOOLED_BYTES.labels("memory").dec(size)


class Spool:
    """One body's rows: appended with `write`, read back from the start by COPY after `finish`."""

    def __init__(self, spools: Spools) -> None:
        self._spools = spools
        self._memory: io.BytesIO | None = io.BytesIO()
        self._reserved = 0
        self._file: BinaryIO | None = None
        self._pending = bytearray()
        self._on_disk = 0

    @property
    def in_file(self) -> bool:
        return self._file is not None

    async def write(self, data: bytes) -> None:
        if self._memory is not None:
            if self._spools.reserve(len(data)):
                self._reserved += len(data)
                self._memory.write(data)
                return
            await self._move_to_file()
        self._pending += data
        if len(self._pending) >= FILE_WRITE_BYTES:
            await self._flush()

    async def finish(self) -> BinaryIO:
        """The spool rewound to its start, every row written."""
        if self._memory is not None:
            self._memory.seek(0)
            return self._memory
        await self._flush()
        assert self._file is not None
        await asyncio.to_thread(self._file.seek, 0)
        return self._file

    def close(self) -> None:
        if self._memory is not None:
            self._memory.close()
            self._memory = None
        self._spools.release(self._reserved)
        self._reserved = 0
        if self._file is not None:
            self._file.close()  # a temporary file: closing unlinks it, nothing is flushed
            self._file = None
        SPOOLED_BYTES.labels("file").dec(self._on_disk)
        self._on_disk = 0

    async def _move_to_file(self) -> None:
        assert self._memory is not None
        self._file = await asyncio.to_thread(tempfile.TemporaryFile)
        self._pending += self._memory.getvalue()
        self._memory.close()
        self._memory = None
        self._spools.release(self._reserved)
        self._reserved = 0

    async def _flush(self) -> None:
        if not self._pending:
            return
        assert self._file is not None
        data, self._pending = bytes(self._pending), bytearray()
        await asyncio.to_thread(self._file.write, data)
        self._on_disk += len(data)
        SPOOLED_BYTES.labels("file").inc(len(data))
