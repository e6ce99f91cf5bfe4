"""What a running process was started with (its command line, its environment), read from /proc
(Linux)."""

from __future__ import annotations

import time


def environment_of(pid: int, timeout_s: float = 10.0) -> dict[str, str]:
    """The environment process `pid` was started with. Read right after `Popen` returned (as the
    exec closes the child's descriptors, a moment before the kernel lays out the new program's
    environment), /proc shows an empty one: it is read again until it is not, up to `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        with open(f"/proc/{pid}/environ", "rb") as file:
            raw = file.read()
        if raw or time.monotonic() > deadline:
            pairs = (entry.decode().partition("=") for entry in raw.split(b"\0") if entry)
            return {name: value for name, _, value in pairs}
        time.sleep(0.001)


def command_line(pid: int) -> str:
    """The command line process `pid` runs, its arguments joined by spaces."""
    with open(f"/proc/{pid}/cmdline", "rb") as file:
        return file.read().replace(b"\0", b" ").decode()
