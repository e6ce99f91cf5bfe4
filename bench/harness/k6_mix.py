"""Several kinds of traffic in one k6 run, each at its own fixed rate, each answer counted by status."""

from __future__ import annotations

import asyncio
import functools
import math
import os
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import orjson

from harness.database import HOST
from sophia.cli.loadtest import find_k6

STATUSES = (
    0,
    200,
    201,
    204,
    304,
    400,
    401,
    403,
    404,
    405,
    408,
    409,
    412,
    413,
    415,
    422,
    429,
    500,
    502,
    503,
    504,
)
"""Counted one by one (0: no answer: refused, reset, timed out); any other lands in `other`."""
SUCCESS = ("200", "201", "204")

# Appended to a benchmark's script, which exports one function per scenario. A threshold makes k6
# keep a sub-metric (these always pass): per scenario, and per scenario and status.
OPTIONS = """
const mixPlans = JSON.parse(__ENV.MIX_PLANS);
const mixScenarios = {};
const mixThresholds = {};
for (const [name, plan] of Object.entries(mixPlans)) {
  mixScenarios[name] = { executor: 'constant-arrival-rate', exec: name, rate: plan.per_min, timeUnit: '1m',
    duration: __ENV.MIX_DURATION, preAllocatedVUs: plan.vus, maxVUs: plan.max_vus };
  mixThresholds[`http_reqs{scenario:${name}}`] = ['count>=0'];
  mixThresholds[`dropped_iterations{scenario:${name}}`] = ['count>=0'];
  mixThresholds[`http_req_duration{scenario:${name}}`] = ['max>=0'];
  for (const status of JSON.parse(__ENV.MIX_STATUSES)) {
    mixThresholds[`http_reqs{scenario:${name},status:${status}}`] = ['count>=0'];
  }
}
export const options = { discardResponseBodies: true, summaryTrendStats: ['med', 'p(99)', 'max'],
  scenarios: mixScenarios, thresholds: mixThresholds };
export function handleSummary(data) { return { [__ENV.MIX_SUMMARY]: JSON.stringify(data.metrics) }; }
"""


@dataclass(frozen=True)
class Traffic:
    """One scenario: its requests by status, their latency, and those k6 could not send on time."""

    target_per_s: float
    requests: int
    statuses: dict[str, int]
    p50_ms: float
    p99_ms: float
    max_ms: float
    dropped: int
    """Requests due while every virtual user of the scenario waited on an answer."""
    second_max_ms: list[float] | None = None
    """The longest answer of each second of the run, in order (`k6_mix(..., seconds=True)`): shows
    whether a tail is a few bad seconds or spread over all of them."""
    p99_ms_by_method: dict[str, float] | None = None
    """The p99 of each HTTP method's answers (`seconds=True`): whether a tail is reads or writes."""

    @property
    def errors(self) -> int:
        """Requests answered with anything but 2xx, or not answered."""
        return self.requests - sum(self.statuses.get(status, 0) for status in SUCCESS)

    def as_dict(self) -> dict[str, Any]:
        exact = {**asdict(self), "errors": self.errors}
        return {name: round(value, 3) if isinstance(value, float) else value for name, value in exact.items()}


def _traffic(metrics: dict[str, Any], name: str, per_s: float) -> Traffic:
    def value(metric: str, stat: str) -> float:
        return float(metrics.get(metric, {}).get("values", {}).get(stat, 0))

    counted = {
        str(code): int(value(f"http_reqs{{scenario:{name},status:{code}}}", "count")) for code in STATUSES
    }
    requests = int(value(f"http_reqs{{scenario:{name}}}", "count"))
    statuses = {code: count for code, count in counted.items() if count}
    if other := requests - sum(counted.values()):
        statuses["other"] = other
    duration = f"http_req_duration{{scenario:{name}}}"
    return Traffic(
        target_per_s=per_s,
        requests=requests,
        statuses=statuses,
        p50_ms=value(duration, "med"),
        p99_ms=value(duration, "p(99)"),
        max_ms=value(duration, "max"),
        dropped=int(value(f"dropped_iterations{{scenario:{name}}}", "count")),
    )


def _lower(nice: int | None) -> None:
    """In the child before k6 starts (k6's threads inherit it): `nice` steps below normal CPU
    priority, or with None Linux's idle scheduling class."""
    if nice is None:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    else:
        os.nice(nice)


async def k6_mix(
    script: str,
    per_s: dict[str, float],
    *,
    duration_s: float,
    variables: dict[str, str],
    source: str = HOST,
    latency_s: float = 0.1,
    timeout_s: float = 10.0,
    max_vus: int = 300,
    nice: int | None = 0,
    seconds: bool = False,
) -> dict[str, Traffic]:
    """Run `script` (exporting a function per key of `per_s`) with each at its rate a second, from
    address `source` (any 127.x.y.z: a client of its own to the API's limits per address).

    Virtual users are started up front for answers within `latency_s` (k6 growing its pool mid-run
    costs CPU the server would miss on a small machine), and grow up to what `timeout_s`-long answers
    need, at most `max_vus` a scenario: past that, what falls due is dropped, and counted. For load
    that would come from other machines than the server's, `nice` lowers k6's CPU priority (all its
    threads, which inherit it): that many steps below normal, or with `None` to Linux's idle class
    (`SCHED_IDLE`: it runs only on CPU no other process wants, and yields it at once when one does).
    With `seconds`, k6 also writes every answer's time (`--out json`) and each scenario gets
    `second_max_ms`."""
    plans = {
        name: {
            "per_min": max(1, round(rate * 60)),  # a minute as the unit: fractional rates a second
            "vus": max(2, math.ceil(rate * latency_s)),
            "max_vus": min(max_vus, max(4, math.ceil(rate * timeout_s))),
        }
        for name, rate in per_s.items()
    }
    with tempfile.TemporaryDirectory(prefix="sophia-k6-") as folder:
        script_file, summary, output, points = (
            Path(folder) / name for name in ("mix.js", "summary.json", "k6.log", "points.json")
        )
        script_file.write_text(script + OPTIONS)
        environment = {
            **variables,
            "PATH": os.environ.get("PATH", ""),
            "HOME": os.environ.get("HOME", folder),
            "MIX_PLANS": orjson.dumps(plans).decode(),
            "MIX_STATUSES": orjson.dumps(STATUSES).decode(),
            "MIX_DURATION": f"{max(1, round(duration_s))}s",
            "MIX_SUMMARY": str(summary),
        }
        argv = [str(find_k6()), "run", "--quiet", "--no-color", "--no-usage-report", "--address="]
        argv += [f"--local-ips={source}", *(["--out", f"json={points}"] if seconds else []), str(script_file)]
        lowered = None if nice == 0 else functools.partial(_lower, nice)
        with output.open("wb") as log:  # k6 warns on every failed request: a file, not a pipe to fill
            process = await asyncio.create_subprocess_exec(
                *argv, env=environment, stdout=log, stderr=log, preexec_fn=lowered
            )
            try:
                await asyncio.wait_for(process.wait(), duration_s + timeout_s + 90)
            finally:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
        if process.returncode != 0 or not summary.exists():
            tail = output.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"k6 failed ({process.returncode}): {tail}")
        metrics = orjson.loads(summary.read_bytes())
        longest, by_method = _answer_times(points) if seconds else ({}, {})
    return {
        name: replace(
            _traffic(metrics, name, rate),
            second_max_ms=longest.get(name),
            p99_ms_by_method=by_method.get(name),
        )
        for name, rate in per_s.items()
    }


def _answer_times(points: Path) -> tuple[dict[str, list[float]], dict[str, dict[str, float]]]:
    """Per scenario, from k6's JSON output (one object a line): the longest answer of each second
    (an answer's time is written to the second first, so its first 19 characters name its second),
    and the p99 of each method's answers (nearest rank: k6's own p(99) interpolates, so the two
    may differ by a fraction of the gap between neighbouring answers)."""
    longest: dict[str, dict[str, float]] = {}
    times: dict[str, dict[str, list[float]]] = {}
    with points.open("rb") as lines:
        for line in lines:
            point = orjson.loads(line)
            if point.get("type") != "Point" or point.get("metric") != "http_req_duration":
                continue
            data, value = point["data"], float(point["data"]["value"])
            scenario = data["tags"].get("scenario", "")
            second = data["time"][:19]
            seconds = longest.setdefault(scenario, {})
            seconds[second] = max(seconds.get(second, 0.0), value)
            times.setdefault(scenario, {}).setdefault(data["tags"].get("method", "?"), []).append(value)
    return (
        {name: [round(seconds[key], 2) for key in sorted(seconds)] for name, seconds in longest.items()},
        {
            name: {method: round(_p99(values), 2) for method, values in sorted(methods.items())}
            for name, methods in times.items()
        },
    )


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]
