"""The wrk load generator and its Lua script picking random record ids."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import orjson

from harness.database import WRK_INSTALL
from harness.measure import Measurement, OtherCpu
from harness.server import ApiServer

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
