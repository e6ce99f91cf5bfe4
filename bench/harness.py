"""What every benchmark shares: engines and a migrated database, the API server as a child process,
the wrk load generator, synthetic catalog rows, percentiles and a description of the machine.

Engines named by `SOPHIA_DATABASE_URL` / `SOPHIA_REDIS_URL` / `SOPHIA_NATS_URL` are used as they are
(the test session sets them); the missing ones are started embedded in a temporary directory. Either
way the benchmark gets a database of its own, created, migrated and dropped here. All traffic stays on
127.0.0.1; every wait has a deadline.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx
import orjson
import structlog

from sophia.database import keys
from sophia.database.catalog import CATALOG
from sophia.database.migrations import migrate
from sophia.engines import EnginesThread, EngineUrls
from sophia.engines.process import free_port
from sophia.shared.logging import configure_logging
from sophia.shared.settings import Settings

HOST = "127.0.0.1"
DEFAULT_SERVER = Settings.model_fields["api_server"].default
DEFAULT_WORKERS = Settings.model_fields["api_workers"].default
WRK_INSTALL = "apt-get install -y wrk"
STAGES = ("open", "qualifiedtobuy", "presentationscheduled", "decisionmakerboughtin", "contractsent")
COMPANIES = ("Acme", "Globex", "Initech", "Umbrella", "Hooli", "Stark", "Wayne", "Soylent", "Tyrell")
PRODUCTS = ("renewal", "expansion", "pilot", "platform", "support plan", "new logo")


T = TypeVar("T")


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on a fresh uvloop loop (the API's loop, so both sides get the same one)."""
    import uvloop

    return uvloop.run(coroutine)


@dataclass(frozen=True)
class Environment:
    """Engines ready for one benchmark: its own migrated database and an admin API key."""

    database_url: str
    redis_url: str
    nats_url: str
    admin_key: str
    postgres_version: str
    work_dir: Path
    load_average_1m: float
    """The machine's load when the run began: above ~0.5, something else competes for the CPUs."""

    def server_env(self) -> dict[str, str]:
        return EngineUrls(self.database_url, self.redis_url, self.nats_url).as_env()


async def _admin(base_url: str, sql: str) -> None:
    connection = await asyncpg.connect(base_url, timeout=10)
    try:
        await connection.execute(sql, timeout=60)
    finally:
        await connection.close(timeout=10)


async def _prepare(database_url: str) -> tuple[str, str]:
    """Migrate the fresh database; return (an admin key's secret, the server version)."""
    connection = await asyncpg.connect(database_url, timeout=10)
    try:
        await migrate(connection)
        _, secret = await keys.create(connection, "bench-admin", "admin")
        version = await connection.fetchval("SHOW server_version", timeout=10)
    finally:
        await connection.close(timeout=10)
    return secret, str(version)


@contextmanager
def environment() -> Iterator[Environment]:
    """Engines (configured or embedded, non-durable) and a database for this run only."""
    if not structlog.is_configured():  # keep the engines' log lines off stdout (--json prints there)
        configure_logging("WARNING", json=False)
    load_average_1m = os.getloadavg()[0]
    work_dir = Path(tempfile.mkdtemp(prefix="sophia-bench-"))
    engines = EnginesThread(Settings(data_dir=work_dir), durable=False)
    name = f"sophia_bench_{os.getpid()}_{time.monotonic_ns() % 1_000_000}"
    created = False
    try:
        urls = engines.start()
        run_async(_admin(urls.database_url, f'CREATE DATABASE "{name}"'))
        created = True
        database_url = urls.database_url.rsplit("/", 1)[0] + f"/{name}"
        admin_key, postgres_version = run_async(_prepare(database_url))
        yield Environment(
            database_url,
            urls.redis_url,
            urls.nats_url,
            admin_key,
            postgres_version,
            work_dir,
            load_average_1m,
        )
    finally:
        if created:
            run_async(_admin(urls.database_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engines.stop()
        shutil.rmtree(work_dir, ignore_errors=True)


async def truncate(database_url: str) -> None:
    """Empty the catalog and the outbox, then checkpoint so each side starts from the same state."""
    connection = await asyncpg.connect(database_url, timeout=10)
    try:
        await connection.execute(f"TRUNCATE {CATALOG}, sophia_core.outbox", timeout=60)
        await connection.execute("CHECKPOINT", timeout=60)
    finally:
        await connection.close(timeout=10)


def catalog_rows(count: int, seed: int = 7) -> list[dict[str, Any]]:
    """`count` deterministic CRM deals as bulk-ingest lines, about 330 bytes each as NDJSON."""
    rng = random.Random(seed)
    rows = []
    for index in range(count):
        company = rng.choice(COMPANIES)
        rows.append(
            {
                "source_system": "bench",
                "kind": "deal",
                "external_id": f"deal-{index:08d}",
                "data": {
                    "dealname": f"{company} {rng.choice(PRODUCTS)} {index}",
                    "amount": f"{rng.randint(500, 250_000)}.00",
                    "currency": rng.choice(("EUR", "USD", "GBP")),
                    "dealstage": rng.choice(STAGES),
                    "pipeline": rng.choice(("default", "enterprise", "partner")),
                    "probability": round(rng.random(), 2),
                    "closedate": f"2027-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
                    "hubspot_owner_id": str(rng.randint(1000, 1099)),
                    "company": f"{company} {rng.choice(('Inc', 'GmbH', 'Ltd', 'SA'))}",
                },
            }
        )
    return rows


async def copy_rows(connection: asyncpg.Connection, rows: list[dict[str, Any]]) -> None:
    """Raw COPY of `rows` into the catalog (no staging, no outbox): the floor any ingest path pays."""
    records = (
        (row["source_system"], row["kind"], row["external_id"], orjson.dumps(row["data"]).decode())
        for row in rows
    )
    await connection.copy_records_to_table(
        "unified_data_catalog",
        schema_name="sophia_core",
        records=records,
        columns=("source_system", "kind", "external_id", "data"),
        timeout=600,
    )


async def seed(database_url: str, records: int) -> list[str]:
    """Fill an emptied catalog by COPY and analyze it; return the ids it holds."""
    await truncate(database_url)
    connection = await asyncpg.connect(database_url, timeout=10)
    try:
        await copy_rows(connection, catalog_rows(records))
        await connection.execute(f"VACUUM ANALYZE {CATALOG}", timeout=120)
        return [str(row["id"]) for row in await connection.fetch(f"SELECT id FROM {CATALOG}", timeout=60)]
    finally:
        await connection.close(timeout=10)


class ApiServer:
    """`python -m sophia.api.server` as a child: ready when /readyz says 200, stopped with SIGTERM."""

    def __init__(
        self,
        env: Environment,
        *,
        server: str = DEFAULT_SERVER,
        workers: int = DEFAULT_WORKERS,
        ready_timeout_s: float = 60.0,
        stop_timeout_s: float = 20.0,
    ) -> None:
        self.env = env
        self.server = server
        self.workers = workers
        self.port = free_port(HOST)
        self.base_url = f"http://{HOST}:{self.port}"
        self.ready_timeout_s = ready_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.log_path = env.work_dir / f"api-{server}-{workers}-{self.port}.log"
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ApiServer:
        child_env = {
            **os.environ,
            **self.env.server_env(),
            "SOPHIA_API_SERVER": self.server,
            "SOPHIA_API_WORKERS": str(self.workers),
            "SOPHIA_API_HOST": HOST,
            "SOPHIA_API_PORT": str(self.port),
        }
        with self.log_path.open("wb") as log_file:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "sophia.api.server"],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=child_env,
                start_new_session=True,  # its own process group: its workers are stopped with it
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.ready_timeout_s
        with httpx.Client(base_url=self.base_url, timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self._process.poll() is not None:
                    raise RuntimeError(f"the API exited with {self._process.returncode}:\n{self.log_tail()}")
                try:
                    if client.get("/readyz").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
        raise TimeoutError(f"the API was not ready within {self.ready_timeout_s}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                process.wait(self.stop_timeout_s)
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)  # whatever of its group is still there
        process.wait(self.stop_timeout_s)
        self._process = None

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@dataclass(frozen=True)
class Measurement:
    """One side of a benchmark: successful operations over wall seconds, and latency percentiles."""

    operations: int
    seconds: float
    p50_ms: float | None = None
    p99_ms: float | None = None
    errors: int = 0
    other_cpu: float | None = None
    """Share of the machine's CPU time that processes outside this benchmark took meanwhile."""

    @property
    def per_s(self) -> float:
        return self.operations / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        exact = asdict(self)
        rounded = {name: round(value, 3) for name, value in exact.items() if isinstance(value, float)}
        return {**exact, **rounded, "per_s": round(self.per_s, 1)}


class OtherCpu:
    """Measures, over a `with` block, the CPU share taken by processes outside this benchmark.

    The benchmark is this process and its descendants (engines it started, the API, wrk), counted
    with the children they already reaped; everything else the kernel reports busy is someone else.
    """

    def __init__(self) -> None:
        self.share: float | None = None
        self._start: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @staticmethod
    def _sample() -> tuple[float, float, float]:
        """(monotonic seconds, CPU seconds busy on the machine, CPU seconds of this process tree)."""
        ticks = os.sysconf("SC_CLK_TCK")
        with Path("/proc/stat").open() as stat:
            fields = [int(value) for value in stat.readline().split()[1:9]]
        busy = sum(fields) - fields[3] - fields[4]  # user..steal, less idle and iowait
        parents: dict[int, int] = {}
        spent: dict[int, int] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat_line = (entry / "stat").read_text()
            except OSError:
                continue  # it exited meanwhile
            values = stat_line.rsplit(")", 1)[1].split()
            pid = int(entry.name)
            parents[pid] = int(values[1])
            spent[pid] = sum(int(value) for value in values[11:15])  # utime stime cutime cstime
        tree, frontier = {os.getpid()}, [os.getpid()]
        for _ in range(len(parents)):  # bounded walk down the process tree
            if not frontier:
                break
            parent = frontier.pop()
            children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in tree]
            tree.update(children)
            frontier.extend(children)
        mine = sum(spent.get(pid, 0) for pid in tree)
        return time.monotonic(), busy / ticks, mine / ticks

    def __enter__(self) -> OtherCpu:
        self._start = self._sample()
        return self

    def __exit__(self, *exc_info: object) -> None:
        end = self._sample()
        wall = end[0] - self._start[0]
        others = (end[1] - self._start[1]) - (end[2] - self._start[2])
        capacity = wall * len(os.sched_getaffinity(0))
        self.share = round(min(max(others / capacity, 0.0), 1.0), 3) if capacity > 0 else None


def settle(timeout_s: float, threshold: float = 0.1, window_s: float = 1.0) -> float | None:
    """Wait (at most `timeout_s`) for a `window_s` in which others take under `threshold` of the CPUs.

    On a shared machine this keeps other people's test runs out of most measurements; each
    measurement still records what others took while it ran (`other_cpu`).
    """
    share = None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with OtherCpu() as other_cpu:
            time.sleep(min(window_s, max(deadline - time.monotonic(), 0.01)))
        share = other_cpu.share
        if share is not None and share < threshold:
            break
    return share


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending list (`fraction` 0.99 for p99)."""
    if not sorted_values:
        raise ValueError("no values")
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def median(rounds: list[Measurement]) -> Measurement:
    """The round with the median throughput (the lower middle one of an even count)."""
    if not rounds:
        raise ValueError("no rounds")
    return sorted(rounds, key=lambda measurement: measurement.per_s)[(len(rounds) - 1) // 2]


def ratio(numerator: Measurement, denominator: Measurement) -> float:
    return numerator.per_s / denominator.per_s if denominator.per_s > 0 else 0.0


def paired_ratio(numerators: list[Measurement], denominators: list[Measurement]) -> float:
    """The median of per-round ratios: each pair ran back to back, under the same neighbours."""
    ratios = sorted(ratio(top, bottom) for top, bottom in zip(numerators, denominators, strict=True))
    if not ratios:
        raise ValueError("no rounds")
    middle = len(ratios) // 2
    return ratios[middle] if len(ratios) % 2 else (ratios[middle - 1] + ratios[middle]) / 2


def comparison(
    raw_rounds: list[Measurement], api_rounds: list[Measurement], goal: float, env: Environment
) -> dict[str, Any]:
    """The result fields every A/B benchmark reports: both sides, the ratios, every round, the machine."""
    raw, api = median(raw_rounds), median(api_rounds)
    return {
        "raw": raw.as_dict(),
        "api": api.as_dict(),
        "ratio": round(paired_ratio(api_rounds, raw_rounds), 3),
        "ratio_of_medians": round(ratio(api, raw), 3),
        "goal": goal,
        "raw_rounds": [measurement.as_dict() for measurement in raw_rounds],
        "api_rounds": [measurement.as_dict() for measurement in api_rounds],
        "machine": machine(env),
    }


def side_line(label: str, measurement: Measurement, unit: str) -> str:
    """One side of a benchmark, as the human summary prints it."""
    text = f"  {label:<26}{measurement.per_s:>10,.0f} {unit}/s"
    if measurement.p50_ms is not None and measurement.p99_ms is not None:
        text += f"  p50 {measurement.p50_ms:6.2f} ms  p99 {measurement.p99_ms:7.2f} ms"
    else:
        text += f"  ({measurement.seconds:.2f} s)"
    if measurement.errors:
        text += f"  errors {measurement.errors}"
    if measurement.other_cpu is not None:
        text += f"  [others took {measurement.other_cpu:.0%} of the CPUs]"
    return text


def add_common_arguments(parser: argparse.ArgumentParser, rounds: int = 3) -> None:
    parser.add_argument("--rounds", type=int, default=rounds, help="measurement rounds; the median counts")
    parser.add_argument(
        "--settle", type=float, default=20.0, help="at most this many seconds to wait for a quiet machine"
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


WRK_SCRIPT = """
local ids = {}
local prefix = ""
function init(args)
  if args[1] ~= "" then for line in io.lines(args[1]) do ids[#ids + 1] = line end end
  prefix = args[2] or ""
  if args[3] ~= nil and args[3] ~= "" then wrk.headers["Authorization"] = "Bearer " .. args[3] end
  math.randomseed(os.time() + math.floor(os.clock() * 1000000))
end
function request()
  if #ids == 0 then return wrk.format() end
  return wrk.format(nil, prefix .. ids[math.random(#ids)])
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\\nRESULT {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,' ..
    '"timeout":%d,"p50_us":%d,"p99_us":%d}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise SystemExit(f"wrk is not installed; the HTTP load generator needs it: `{WRK_INSTALL}`")
    return found


def wrk(
    url: str,
    *,
    duration_s: float,
    connections: int,
    threads: int = 1,
    token: str = "",
    ids: list[str] | None = None,
    prefix: str = "",
) -> Measurement:
    """Closed-loop load on `url` (or `url` + prefix + a random id per request) for `duration_s`."""
    binary = wrk_binary()
    with tempfile.TemporaryDirectory(prefix="sophia-wrk-") as folder:
        script = Path(folder) / "bench.lua"
        script.write_text(WRK_SCRIPT)
        ids_file = ""
        if ids:
            ids_file = str(Path(folder) / "ids.txt")
            Path(ids_file).write_text("\n".join(ids) + "\n")
        seconds = max(1, round(duration_s))
        argv = [binary, f"-t{threads}", f"-c{max(connections, threads)}", f"-d{seconds}s", "--timeout", "10s"]
        argv += ["-s", str(script), url, "--", ids_file, prefix, token]
        with OtherCpu() as other_cpu:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
    result_line = next((line for line in done.stdout.splitlines() if line.startswith("RESULT ")), None)
    if done.returncode != 0 or result_line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
    result = orjson.loads(result_line.removeprefix("RESULT "))
    errors = sum(result[name] for name in ("connect", "read", "write", "status", "timeout"))
    return Measurement(
        operations=result["requests"] - result["status"],
        seconds=result["duration_us"] / 1e6,
        p50_ms=result["p50_us"] / 1000,
        p99_ms=result["p99_us"] / 1000,
        errors=errors,
        other_cpu=other_cpu.share,
    )


def wrk_records(
    server: ApiServer, ids: list[str], *, duration_s: float, connections: int, threads: int = 1
) -> Measurement:
    """wrk on `GET /api/v1/records/{a random one of ids}` with the admin key."""
    return wrk(
        f"{server.base_url}/api/v1/records/{ids[0]}",
        duration_s=duration_s,
        connections=connections,
        threads=threads,
        token=server.env.admin_key,
        ids=ids,
        prefix="/api/v1/records/",
    )


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


async def count_rows(database_url: str) -> int:
    connection = await asyncpg.connect(database_url, timeout=10)
    try:
        return int(await connection.fetchval(f"SELECT count(*) FROM {CATALOG}", timeout=60))
    finally:
        await connection.close(timeout=10)
