"""Open-loop load at a fixed rate with k6 (wrk only closes the loop: it cannot hold a rate)."""

from __future__ import annotations

import os
import resource
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from harness.measure import OtherCpu
from harness.server import ApiServer
from sophia.cli.loadtest import find_k6

# constant-arrival-rate starts RATE iterations a second whether or not earlier ones have answered,
# so a slow server shows up as latency (and as dropped iterations once every VU is busy).
K6_SCRIPT = """
import http from 'k6/http';
import { SharedArray } from 'k6/data';

const ids = new SharedArray('ids', () => open(__ENV.IDS_FILE).split('\\n').filter((id) => id !== ''));
const params = { headers: { Authorization: `Bearer ${__ENV.TOKEN}` } };

export const options = {
  discardResponseBodies: true,
  summaryTrendStats: ['med', 'p(99)', 'max'],
  scenarios: {
    fixed_rate: {
      executor: 'constant-arrival-rate',
      rate: parseInt(__ENV.RATE, 10),
      timeUnit: '1s',
      duration: __ENV.DURATION,
      preAllocatedVUs: parseInt(__ENV.VUS, 10),
      maxVUs: parseInt(__ENV.VUS, 10),
    },
  },
};

export default function () {
  http.get(__ENV.URL_PREFIX + ids[Math.floor(Math.random() * ids.length)], params);
}
"""


@dataclass(frozen=True)
class FixedRate:
    """A fixed-rate run: what was asked, what was served, its latency, and what k6 could not start."""

    target_per_s: int
    per_s: float
    requests: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    failed: int
    dropped: int
    """Requests k6 could not send on time: every virtual user was waiting on an answer."""
    vus: int
    generator_cpu_s: float
    """CPU seconds k6 itself took: on a small machine, taken from the server it measures."""
    other_cpu: float | None = None

    def as_dict(self) -> dict[str, Any]:
        exact = asdict(self)
        rounded = {name: round(value, 3) for name, value in exact.items() if isinstance(value, float)}
        return {**exact, **rounded}


def k6_version() -> str:
    argv = [str(find_k6()), "version"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    return done.stdout.split()[1] if done.returncode == 0 and done.stdout.split() else "?"


def k6_records(
    server: ApiServer, ids: list[str], *, rate: int, duration_s: float, vus: int | None = None
) -> FixedRate:
    """k6 on `GET /api/v1/records/{a random one of ids}` at `rate` requests a second for `duration_s`.

    `vus` virtual users (each with its own connection; default rate / 100), all started before the
    run: k6 growing its pool mid-run costs enough CPU on a small machine to show in the latencies.
    A request due while every one of them waits on an answer is dropped, and counted."""
    seconds = max(1, round(duration_s))
    vus = vus or max(10, rate // 100)
    with tempfile.TemporaryDirectory(prefix="sophia-k6-") as folder:
        script, ids_file, summary = (Path(folder) / name for name in ("rate.js", "ids.txt", "summary.json"))
        script.write_text(K6_SCRIPT)
        ids_file.write_text("\n".join(ids) + "\n")
        argv = [str(find_k6()), "run", "--quiet", "--no-color", "--no-usage-report", "--address="]
        argv += [f"--summary-export={summary}", str(script)]
        environment = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": os.environ.get("HOME", folder),
            "IDS_FILE": str(ids_file),
            "TOKEN": server.env.admin_key,
            "URL_PREFIX": f"{server.base_url}/api/v1/records/",
            "RATE": str(rate),
            "DURATION": f"{seconds}s",
            "VUS": str(vus),
        }
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        with OtherCpu() as other_cpu:
            done = subprocess.run(
                argv, env=environment, capture_output=True, text=True, timeout=seconds + 90, check=False
            )
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode != 0 or not summary.exists():
            output = (done.stderr or done.stdout).strip()[-2000:]
            raise RuntimeError(f"k6 failed ({done.returncode}): {output}")
        metrics = orjson.loads(summary.read_bytes())["metrics"]
    duration = metrics["http_req_duration"]
    return FixedRate(
        target_per_s=rate,
        per_s=metrics["http_reqs"]["rate"],
        requests=metrics["http_reqs"]["count"],
        p50_ms=duration["med"],
        p99_ms=duration["p(99)"],
        max_ms=duration["max"],
        failed=round(metrics["http_req_failed"]["value"] * metrics["http_reqs"]["count"]),
        dropped=metrics.get("dropped_iterations", {}).get("count", 0),
        vus=vus,
        generator_cpu_s=(after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
        other_cpu=other_cpu.share,
    )
