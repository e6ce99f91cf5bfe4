"""What a running process was started with (its command line, its environment), read from /proc
(Linux)."""

from __future__ import annotations


def environment_of(pid: int) -> dict[str, str]:
    """The environment process `pid` was started with."""
    with open(f"/proc/{pid}/environ", "rb") as file:
        pairs = (entry.decode().partition("=") for entry in file.read().split(b"\0") if entry)
        return {name: value for name, _, value in pairs}


def command_line(pid: int) -> str:
    """The command line process `pid` runs, its arguments joined by spaces."""
    with open(f"/proc/{pid}/cmdline", "rb") as file:
        return file.read().replace(b"\0", b" ").decode()
