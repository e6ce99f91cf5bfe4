"""Command-line options every benchmark shares, the machine's description, and the output."""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson

from harness.database import Environment


def add_common_arguments(parser: argparse.ArgumentParser, rounds: int = 3, *, timed: bool = True) -> None:
    """--rounds, --settle and --json; only --json for a benchmark that counts rather than times."""
    if timed:
        parser.add_argument(
            "--rounds", type=int, default=rounds, help="measurement rounds; the median counts"
        )
        parser.add_argument(
            "--settle", type=float, default=20.0, help="at most this many seconds to wait for a quiet machine"
        )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def machine(env: Environment | None = None) -> dict[str, Any]:
    """What the figures were measured on."""
    cpu_model = memory = "unknown"
    with Path("/proc/cpuinfo").open() as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    with Path("/proc/meminfo").open() as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal"):
                memory = f"{int(line.split()[1]) / 1024**2:.1f} GiB"
                break
    versions = {
        name: metadata.version(name) for name in ("granian", "uvicorn", "asyncpg", "httpx", "fastapi")
    }
    wrk_path = shutil.which("wrk")
    if wrk_path:
        banner = subprocess.run([wrk_path, "-v"], capture_output=True, text=True, timeout=10, check=False)
        versions["wrk"] = (
            (banner.stdout or banner.stderr).split()[1] if banner.stdout or banner.stderr else "?"
        )
    return {
        "cpus": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model,
        "memory": memory,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "postgres": env.postgres_version if env else "unknown",
        "load_average_1m_at_start": env.load_average_1m if env else os.getloadavg()[0],
        "versions": versions,
    }


def describe(info: dict[str, Any]) -> str:
    versions = ", ".join(f"{name} {version}" for name, version in info["versions"].items())
    return (
        f"machine: {info['cpus']} CPUs ({info['cpu_model']}), {info['memory']}, Python {info['python']}, "
        f"PostgreSQL {info['postgres']}, load average at start {info['load_average_1m_at_start']:.2f}\n"
        f"{versions}"
    )


def emit(result: dict[str, Any], text: str, as_json: bool) -> None:
    """Print the result: JSON on stdout for machines, or the human summary and the machine."""
    if as_json:
        print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    else:
        print(f"{text}\n{describe(result['machine'])}")
