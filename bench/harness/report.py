"""Command-line options every benchmark shares, the machine's description, and the output: printed,
and with `--save` left as a row of the headline table at the top of docs/benchmarks.md."""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson

from harness.database import Environment
from sophia.engines import nats, postgres, valkey
from sophia.shared.files import write_private

RESULTS_ENV = "SOPHIA_BENCH_RESULTS"
"""A folder every run saves its result to when `--save` is not given (`make bench`: .sophia/bench)."""
CPU_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx512_bf16",
    "avx_vnni",
    "amx_tile",
    "hypervisor",
)
"""The flags figures move with: the vector units ONNX Runtime and the engines pick their kernels by,
and `hypervisor`, which says the machine is virtual. The rest of /proc/cpuinfo's list is noise here."""
VERSION = re.compile(r"\d+\.\d+(?:\.\d+)?")


def add_common_arguments(parser: argparse.ArgumentParser, rounds: int = 3, *, timed: bool = True) -> None:
    """--rounds and --settle (only for a benchmark that times rather than counts), --json and --save."""
    if timed:
        parser.add_argument(
            "--rounds", type=int, default=rounds, help="measurement rounds; the median counts"
        )
        parser.add_argument(
            "--settle", type=float, default=20.0, help="at most this many seconds to wait for a quiet machine"
        )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument(
        "--save",
        metavar="DIR",
        default=os.environ.get(RESULTS_ENV) or None,
        help=f"also write the result and its headline row to DIR/<benchmark>.json for bench/headline.py "
        f"(default: ${RESULTS_ENV}, if set)",
    )


def _cpu() -> tuple[str, list[str]]:
    """The first CPU's model name and which of CPU_FLAGS it has."""
    model = "unknown"
    flags: set[str] = set()
    with Path("/proc/cpuinfo").open() as cpuinfo:
        for line in cpuinfo:
            name, _, value = line.partition(":")
            if name.strip() == "model name" and model == "unknown":
                model = value.strip()
            elif name.strip() == "flags":
                flags = set(value.split())
                break
    return model, [flag for flag in CPU_FLAGS if flag in flags]


def _installed_engines() -> dict[str, str]:
    """The versions of the engine binaries `environment()` would start, for a run that starts none."""
    binaries = {
        "postgres": lambda: postgres.binaries() / "postgres",
        "valkey": valkey.binary,
        "nats": nats.binary,
    }
    versions = {}
    for name, binary in binaries.items():
        try:
            banner = subprocess.run(
                [str(binary()), "--version"], capture_output=True, text=True, timeout=10, check=False
            ).stdout
        except (OSError, RuntimeError, subprocess.TimeoutExpired):
            banner = ""
        found = VERSION.search(banner)
        versions[name] = found.group() if found else "unknown"
    return versions


def machine(env: Environment | None = None) -> dict[str, Any]:
    """What the figures were measured on: the CPU, memory, kernel, Python, the engines (as the servers
    report themselves; without `env`, the installed binaries) and the packages on the request path."""
    cpu_model, cpu_flags = _cpu()
    memory = "unknown"
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
    engines = (
        {"postgres": env.postgres_version, "valkey": env.valkey_version, "nats": env.nats_version}
        if env
        else _installed_engines()
    )
    return {
        "cpus": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model,
        "cpu_flags": cpu_flags,
        "memory": memory,
        "python": platform.python_version(),
        "kernel": platform.release(),
        **engines,
        "load_average_1m_at_start": env.load_average_1m if env else os.getloadavg()[0],
        "versions": versions,
    }


def describe(info: dict[str, Any]) -> str:
    versions = ", ".join(f"{name} {version}" for name, version in info["versions"].items())
    return (
        f"machine: {info['cpus']} CPUs ({info['cpu_model']}; {' '.join(info['cpu_flags'])}), "
        f"{info['memory']}, Python {info['python']}, PostgreSQL {info['postgres']}, Valkey {info['valkey']}, "
        f"NATS {info['nats']}, load average at start {info['load_average_1m_at_start']:.2f}\n{versions}"
    )


def find(data: Any, path: str) -> Any:
    """The value at `path` in a result, None where there is none: dict keys, list indexes (-1 the
    last) or `key=value,...` (a list's first item with those values), joined by dots."""
    for step in path.split("."):
        if isinstance(data, dict):
            data = data.get(step)
        elif isinstance(data, list) and "=" in step:
            wanted = dict(pair.split("=", 1) for pair in step.split(","))
            data = next(
                (item for item in data if all(str(item.get(k)) == v for k, v in wanted.items())), None
            )
        elif isinstance(data, list) and re.fullmatch(r"-?\d+", step) and -len(data) <= int(step) < len(data):
            data = data[int(step)]
        else:
            return None
    return data


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class Figure:
    """A side's headline figure: where it is in the result (see `find`), its unit, and a factor to show
    it by (100 for a share shown in %)."""

    path: str
    unit: str
    scale: float = 1.0

    def of(self, result: dict[str, Any]) -> dict[str, Any] | None:
        value = _number(find(result, self.path))
        return None if value is None else {"value": value * self.scale, "unit": self.unit}


@dataclass(frozen=True)
class Goal:
    """A goal in words, and how a result says whether it was met: the figure at `path` at least or at
    most a number; with neither, a flag or a dict of flags (one a goal) the script sets itself."""

    text: str
    path: str = "ratio"
    at_least: float | None = None
    at_most: float | None = None

    def judge(self, result: dict[str, Any]) -> list[bool]:
        """One verdict per goal this stands for; none where the result cannot tell."""
        value = find(result, self.path)
        if self.at_least is None and self.at_most is None:
            flags = value.values() if isinstance(value, dict) else [value]
            return [flag for flag in flags if isinstance(flag, bool)]
        number = _number(value)
        if number is None:
            return []
        return [
            (self.at_least is None or number >= self.at_least)
            and (self.at_most is None or number <= self.at_most)
        ]


@dataclass(frozen=True)
class Headline:
    """A benchmark's row in the headline table of docs/benchmarks.md: side A (the anchor) and side B
    (Sophia) in words and by one figure each, the ratio, the goals, and the heading (its start) of the
    section in docs/benchmarks.md that tells the method and the history. Each script declares one."""

    anchor: str
    subject: str
    a: Figure | None
    b: Figure
    goals: tuple[Goal, ...] = ()
    ratio: str | None = "ratio"
    ratio_label: str = "B/A"
    section: str = ""

    def declared(self) -> dict[str, Any]:
        """What the row says before any run."""
        return {
            "anchor": self.anchor,
            "subject": self.subject,
            "goal": "; ".join(goal.text for goal in self.goals),
            "ratio_label": self.ratio_label,
            "section": self.section,
        }

    def row(self, result: dict[str, Any]) -> dict[str, Any]:
        """The row `result` makes, with when, on which code and on what it was measured."""
        verdicts = [verdict for goal in self.goals for verdict in goal.judge(result)]
        return {
            "benchmark": result["benchmark"],
            **self.declared(),
            "goals": [asdict(goal) for goal in self.goals],
            "a": self.a.of(result) if self.a else None,
            "b": self.b.of(result),
            "ratio": _number(find(result, self.ratio)) if self.ratio else None,
            "met": sum(verdicts),
            "judged": len(verdicts),
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "commit": _commit(),
            "machine": result["machine"],
        }


def _commit() -> str:
    """The code measured: the checked-out commit, `-dirty` when the working tree differs from it."""
    try:
        described = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return described.stdout.strip() or "unknown"


def save(folder: Path, result: dict[str, Any], headline: Headline, options: argparse.Namespace) -> Path:
    """Write folder/<benchmark>.json (the headline row, the options, the whole result) and clear the
    mark a failed run of `make bench` left for this benchmark."""
    name = result["benchmark"]
    saved = {"headline": headline.row(result), "options": vars(options), "result": result}
    path = folder / f"{name}.json"
    # whole or not at all (a reader sees the old file or the new one), beside the engines' secrets
    write_private(path, orjson.dumps(saved, option=orjson.OPT_INDENT_2, default=str))
    (folder / f"{name}.failed").unlink(missing_ok=True)
    return path


def emit(result: dict[str, Any], text: str, options: argparse.Namespace, headline: Headline) -> None:
    """Print the result: JSON on stdout for machines, or the human summary and the machine; with
    `--save`, also leave it for the headline table (the path goes to stderr, off the JSON)."""
    if options.json:
        print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    else:
        print(f"{text}\n{describe(result['machine'])}")
    if options.save:
        print(f"saved {save(Path(options.save), result, headline, options)}", file=sys.stderr)
