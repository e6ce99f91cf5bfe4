"""The MCP gateway against the servers behind it: a federated tool called directly and through the
gateway, calls per second per gateway process, and Sophia's `search_records` against its REST route.

    uv run --frozen python bench/mcp_gateway.py [--calls 2000] [--duration 10] [--connections 32] [--json]

On the run's own engines, with `python -m sophia.mcp_gateway` (one uvicorn process) federating an
echo upstream (bench/harness/mcp_load.py: the SDK's `MCPServer` with a read-only `echo`, served
as the gateway is, in a process of its own) under the name `bench`:

1. Latency, one call at a time: A calls the upstream's `echo` directly, B calls `bench__echo`
   through the gateway, each with the SDK's `Client`, in the 2026-07-28 era and in 2025-11-25
   (`initialize`), A and B alternated; p50 and p99 of each, and B - A of each. Goal (issue 15):
   p99 added <= 5 ms.
2. Calls per second: wrk (one thread, --connections) posting the 2026-07-28 `tools/call` the SDK
   client posts (its headers, its `_meta`), to the upstream directly (A) and through the gateway
   (B), in interleaved rounds; each response is checked (`"isError":false`). The CPU seconds of the
   gateway, the upstream, PostgreSQL (the audit trail) and wrk over each window; calls per CPU
   second of the gateway process is calls per second per core. Goal: >= 1,000. Anchor (published,
   not measured here): ContextForge's 250-400 requests/s per pod.
3. `search_records` over --records seeded records (`source_system=bench`, 20 a page): the REST
   route it wraps, `GET /api/v1/records?source_system=bench&limit=20` (the API, cache off: the same
   query each time), against the same call through the gateway, one at a time, alternated: as a
   plain JSON-RPC POST (the same HTTP client on both sides), and with the SDK's `Client`; and the
   REST route as shipped (cache on: an L1 hit) against the plain POST.

The gateway runs with the shipped settings except `SOPHIA_ML_ENABLED=false` (`semantic_search`
is not called) and `SOPHIA_MCP_RATE_PER_S`, raised so that the one key of the run is not limited.
"""

from __future__ import annotations

import argparse
import resource
import signal
import subprocess
import sys
import tempfile
from contextlib import suppress
from importlib import metadata
from pathlib import Path
from typing import Any

import harness
import orjson
import yaml

MCP_LOAD = Path(__file__).resolve().parent / "harness" / "mcp_load.py"
"""Run, never imported: this file's name shadows the SDK's `mcp` for modules imported from bench/."""
ERA = "2026-07-28"
ERAS = {"2026-07-28": "2026-07-28", "2025-11-25": "legacy"}
"""Each era and the SDK client's `mode` for it."""
UPSTREAM = "bench"
ECHO = {"text": "hello"}
OK = '"isError":false'
SEARCH = {"source_system": "bench", "limit": 20}
GOALS = {"added_p99_ms": 5.0, "calls_per_gateway_core": 1_000}
ANCHOR = "ContextForge: 250-400 requests/s per pod (published)"
SMOKE = {"calls": 20, "warmup_calls": 5, "duration": 1.0, "warmup": 1.0, "rounds": 1, "records": 200}
CLIENT_META = {
    "io.modelcontextprotocol/protocolVersion": ERA,
    "io.modelcontextprotocol/clientInfo": {"name": "sophia-bench", "version": "0.1.0"},
    "io.modelcontextprotocol/clientCapabilities": {},
}

WRK_SCRIPT = """
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args)
  ok, bad, expect = 0, 0, args[3]
  local file = assert(io.open(args[1], "rb"))
  local body = file:read("*a")
  file:close()
  local headers = {}
  for line in io.lines(args[2]) do
    local name, value = line:match("^([^:]+): (.*)$")
    if name then headers[name] = value end
  end
  call = wrk.format("POST", nil, headers, body)
end
function request() return call end
function response(status, headers, body)
  if status == 200 and body:find(expect, 1, true) then ok = ok + 1 else bad = bad + 1 end
end
function done(summary, latency, requests)
  local good, wrong = 0, 0
  for _, thread in ipairs(threads) do good = good + thread:get("ok"); wrong = wrong + thread:get("bad") end
  local e = summary.errors
  io.write(string.format(
    '\\nRESULT {"requests":%d,"duration_us":%d,"socket_errors":%d,"p50_us":%d,"p99_us":%d,' ..
    '"ok":%d,"bad":%d}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99), good, wrong))
end
"""


HEADLINE = harness.Headline(
    anchor="the echo upstream called directly",
    subject="the same tool through the gateway",
    a=harness.Figure("throughput.direct.per_s", "calls/s"),
    b=harness.Figure("throughput.gateway.per_s", "calls/s"),
    ratio="throughput.ratio",
    goals=(
        harness.Goal(
            f"p99 added ≤ {GOALS['added_p99_ms']:g} ms, ≥ {GOALS['calls_per_gateway_core']:,} calls "
            "per gateway core",
            path="goals_met",
        ),
    ),
    section="MCP gateway",
)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--calls", type=int, default=2_000, help="calls a side, one at a time (1 and 3)")
    parser.add_argument("--warmup-calls", type=int, default=100, help="calls a side before measuring")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of each wrk round (2)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of wrk on each side first")
    parser.add_argument("--connections", type=int, default=32, help="concurrent wrk connections")
    parser.add_argument("--records", type=int, default=5_000, help="records seeded for search_records")
    parser.add_argument("--profile", type=Path, help="run the gateway under cProfile, its stats here")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds: " + str(SMOKE))
    harness.add_common_arguments(parser)
    options = parser.parse_args(argv)
    if options.smoke:
        vars(options).update(SMOKE, settle=0.0)
    harness.wrk_binary()  # fail before starting anything when the load generator is missing
    if min(options.calls, options.connections, options.rounds, options.records) < 1:
        parser.error("--calls, --connections, --rounds and --records must be >= 1")
    if options.duration <= 0 or options.warmup < 0 or options.warmup_calls < 0:
        parser.error("--duration must be > 0, --warmup and --warmup-calls >= 0")
    return options


def say(text: str) -> None:
    print(f"  {text}", file=sys.stderr, flush=True)


class Upstream(harness.ApiServer):
    """The echo upstream (harness/mcp_load.py) as a child."""

    ready_path = "/healthz"
    what = "the echo upstream"

    def __init__(self, env: harness.Environment) -> None:
        super().__init__(env, command=[sys.executable, str(MCP_LOAD), "upstream"])
        self.command += ["--port", str(self.port)]
        self.url = f"{self.base_url}/mcp"


class Gateway(harness.ApiServer):
    """`python -m sophia.mcp_gateway` as a child, federating the upstreams of `upstreams_file`."""

    ready_path = "/healthz"
    what = "the MCP gateway"

    def __init__(self, env: harness.Environment, upstreams_file: Path, profile: Path | None) -> None:
        profiling = ["-m", "cProfile", "-o", str(profile)] if profile else []
        super().__init__(env, command=[sys.executable, *profiling, "-m", "sophia.mcp_gateway"])
        self.extra_env = {
            "SOPHIA_MCP_HOST": harness.HOST,
            "SOPHIA_MCP_PORT": str(self.port),
            "SOPHIA_MCP_UPSTREAMS_FILE": str(upstreams_file),
            "SOPHIA_MCP_RATE_PER_S": "1000000000",
            "SOPHIA_ML_ENABLED": "false",
        }
        self.url = f"{self.base_url}/mcp"
        self.profile = profile

    def stop(self) -> None:
        process = self._process
        if self.profile is not None and process is not None and process.poll() is None:
            # uvicorn ends by raising again the signal it stopped on: SIGINT's KeyboardInterrupt lets
            # cProfile write its file, SIGTERM's default action would not.
            process.send_signal(signal.SIGINT)
            with suppress(subprocess.TimeoutExpired):
                process.wait(self.stop_timeout_s)
        super().stop()


def call_body(tool: str, arguments: dict[str, Any]) -> str:
    """A 2026-07-28 `tools/call` as the SDK's client posts it."""
    params = {"name": tool, "arguments": arguments, "_meta": CLIENT_META}
    return orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params}).decode()


def call_headers(tool: str, token: str | None) -> dict[str, str]:
    """The headers the SDK's client sends with a 2026-07-28 `tools/call` (and the key, if any)."""
    headers = {
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": ERA,
        "MCP-Method": "tools/call",
        "MCP-Name": tool,
    }
    return headers | ({"Authorization": f"Bearer {token}"} if token else {})


def sdk_side(url: str, token: str | None, mode: str, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "sdk", "url": url, "token": token, "mode": mode, "tool": tool, "arguments": arguments}


def post_side(url: str, token: str | None, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": "http",
        "method": "POST",
        "url": url,
        "headers": call_headers(tool, token),
        "body": call_body(tool, arguments),
        "expect": OK,
    }


def get_side(url: str, token: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    return {"kind": "http", "method": "GET", "url": url, "headers": headers, "expect": '"items":['}


def sequential(pairs: list[dict[str, Any]], options: argparse.Namespace) -> dict[str, Any]:
    """The pairs' calls, one at a time, by a mcp_load.py process: each side's latencies."""
    plan = {"calls": options.calls, "warmup": options.warmup_calls, "pairs": pairs}
    with harness.OtherCpu() as other_cpu:
        done = subprocess.run(
            [sys.executable, str(MCP_LOAD), "latency"],
            input=orjson.dumps(plan),
            stdout=subprocess.PIPE,
            timeout=600 + options.calls,
            check=True,
        )
    answers = orjson.loads(done.stdout)
    return {name: {**sides, "other_cpu": other_cpu.share} for name, sides in answers.items()}


def latency_figures(side: dict[str, Any]) -> dict[str, Any]:
    ordered = sorted(side["ms"])
    figures = {"calls": len(ordered), "errors": side["errors"], "first_error": side["first_error"]}
    if ordered:
        figures |= {
            "p50_ms": round(harness.percentile(ordered, 0.5), 3),
            "p99_ms": round(harness.percentile(ordered, 0.99), 3),
            "mean_ms": round(sum(ordered) / len(ordered), 3),
        }
    return figures


def compared(pair: dict[str, Any], a: str, b: str) -> dict[str, Any]:
    """Both sides' figures under the names `a` and `b`, B - A and B / A at p50 and p99."""
    first, second = latency_figures(pair["a"]), latency_figures(pair["b"])
    result: dict[str, Any] = {a: first, b: second, "other_cpu": pair["other_cpu"]}
    for name in ("p50_ms", "p99_ms"):
        if name in first and name in second:
            result[f"added_{name}"] = round(second[name] - first[name], 3)
            result[f"ratio_{name.removesuffix('_ms')}"] = round(second[name] / first[name], 3)
    return result


def tool_latency(upstream: Upstream, gateway: Gateway, options: argparse.Namespace) -> dict[str, Any]:
    """Part 1: `echo` directly (A) and `bench__echo` through the gateway (B), both eras."""
    key = gateway.env.admin_key
    pairs = [
        {
            "name": era,
            "a": sdk_side(upstream.url, None, mode, "echo", ECHO),
            "b": sdk_side(gateway.url, key, mode, f"{UPSTREAM}__echo", ECHO),
        }
        for era, mode in ERAS.items()
    ]
    harness.settle(options.settle)
    answers = sequential(pairs, options)
    return {era: compared(answers[era], "direct", "gateway") for era in ERAS}


def wrk_calls(
    url: str, tool: str, token: str | None, *, duration_s: float, connections: int
) -> dict[str, Any]:
    """wrk posting one `tools/call` to `url` for `duration_s`; every answer checked."""
    with tempfile.TemporaryDirectory(prefix="sophia-wrk-") as folder:
        script, body, headers = (Path(folder) / name for name in ("mcp.lua", "body.json", "headers.txt"))
        script.write_text(WRK_SCRIPT)
        body.write_text(call_body(tool, ECHO))
        headers.write_text("".join(f"{name}: {value}\n" for name, value in call_headers(tool, token).items()))
        seconds = max(1, round(duration_s))
        argv = [harness.wrk_binary(), "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s"]
        argv += ["-s", str(script), url, "--", str(body), str(headers), OK]
        spent_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        with harness.OtherCpu() as other_cpu:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
        spent_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next((line for line in done.stdout.splitlines() if line.startswith("RESULT ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
    counts = orjson.loads(line.removeprefix("RESULT "))
    generator_s = sum(
        getattr(spent_after, name) - getattr(spent_before, name) for name in ("ru_utime", "ru_stime")
    )
    measured = harness.Measurement(
        operations=counts["ok"],
        seconds=counts["duration_us"] / 1e6,
        p50_ms=counts["p50_us"] / 1000,
        p99_ms=counts["p99_us"] / 1000,
        errors=counts["socket_errors"] + counts["bad"],
        other_cpu=other_cpu.share,
    )
    return {**measured.as_dict(), "generator_cpu_s": round(generator_s, 2)}


def saturated(
    target: Upstream | Gateway, tool: str, roots: dict[str, int], options: argparse.Namespace
) -> dict[str, Any]:
    """One wrk round on `target`, with the CPU seconds of every process of the run meanwhile."""
    token = target.env.admin_key if isinstance(target, Gateway) else None
    with harness.CpuSplit(roots) as cpu:
        measured = wrk_calls(
            target.url, tool, token, duration_s=options.duration, connections=options.connections
        )
    server = "gateway" if isinstance(target, Gateway) else "upstream"
    server_s = cpu.seconds.get(server, 0.0)
    return {
        **measured,
        "cpu_s": cpu.seconds,
        "server_cpu_s": server_s,
        "per_server_cpu_s": round(measured["operations"] / server_s, 1) if server_s > 0 else None,
    }


def throughput(upstream: Upstream, gateway: Gateway, options: argparse.Namespace) -> dict[str, Any]:
    """Part 2: wrk on the upstream (A) and through the gateway (B), in interleaved rounds."""
    roots = {"gateway": gateway.pid or 0, "upstream": upstream.pid or 0}
    sides = (("direct", upstream, "echo"), ("gateway", gateway, f"{UPSTREAM}__echo"))
    if options.warmup > 0:
        for _, target, tool in sides:
            token = target.env.admin_key if isinstance(target, Gateway) else None
            wrk_calls(target.url, tool, token, duration_s=options.warmup, connections=options.connections)
    rounds: dict[str, list[dict[str, Any]]] = {"direct": [], "gateway": []}
    for number in range(options.rounds):
        for name, target, tool in sides:
            harness.settle(options.settle)
            rounds[name].append(saturated(target, tool, roots, options))
            say(f"round {number + 1}, {name}: {rounds[name][-1]['per_s']:,.0f} calls/s")
    middle = {
        name: sorted(each, key=lambda side: side["per_s"])[(len(each) - 1) // 2]
        for name, each in rounds.items()
    }
    ratios = sorted(
        b["per_s"] / a["per_s"]
        for a, b in zip(rounds["direct"], rounds["gateway"], strict=True)
        if a["per_s"]
    )
    return {
        **middle,
        "ratio": round(ratios[len(ratios) // 2], 3) if ratios else 0.0,
        "rounds": rounds,
    }


def search_latency(
    api: harness.ApiServer, cached_api: harness.ApiServer, gateway: Gateway, options: argparse.Namespace
) -> dict[str, Any]:
    """Part 3: `search_records` through the gateway against the REST route it wraps."""
    key = gateway.env.admin_key
    route = "/api/v1/records?source_system=bench&limit=20"
    pairs = [
        {
            "name": "post",
            "a": get_side(api.base_url + route, key),
            "b": post_side(gateway.url, key, "search_records", SEARCH),
        },
        {
            "name": "sdk",
            "a": get_side(api.base_url + route, key),
            "b": sdk_side(gateway.url, key, ERA, "search_records", SEARCH),
        },
        {
            "name": "cached",
            "a": get_side(cached_api.base_url + route, key),
            "b": post_side(gateway.url, key, "search_records", SEARCH),
        },
    ]
    harness.settle(options.settle)
    answers = sequential(pairs, options)
    return {name: compared(answers[name], "rest", "mcp") for name in ("post", "sdk", "cached")}


def measure(env: harness.Environment, options: argparse.Namespace) -> dict[str, Any]:
    """The upstream and the gateway for the three parts, and the API for the third."""
    say(f"seeding {options.records:,} records")
    harness.run_async(harness.seed(env.database_url, options.records))
    upstreams_file = env.work_dir / "upstreams.yaml"
    upstream = Upstream(env)
    with upstream:
        upstreams_file.write_text(yaml.safe_dump({"upstreams": [{"name": UPSTREAM, "url": upstream.url}]}))
        gateway = Gateway(env, upstreams_file, options.profile)
        with gateway:
            say(f"1/3 tool calls one at a time, direct and through the gateway: {options.calls:,} a side")
            latency = tool_latency(upstream, gateway, options)
            say(
                f"2/3 saturated: wrk x{options.connections}, {options.rounds} x {options.duration:g} s a side"
            )
            calls = throughput(upstream, gateway, options)
            say(f"3/3 search_records and GET /api/v1/records, one at a time: {options.calls:,} a side")
            with (
                harness.ApiServer(env, extra_env={"SOPHIA_CACHE_ENABLED": "false"}) as api,
                harness.ApiServer(env) as cached_api,
            ):
                search = search_latency(api, cached_api, gateway, options)
    return {"latency": latency, "throughput": calls, "search_records": search}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    options = parse(argv)
    with harness.environment() as env:
        result = {
            "benchmark": "mcp_gateway",
            "calls": options.calls,
            "warmup_calls": options.warmup_calls,
            "duration_s": options.duration,
            "connections": options.connections,
            "rounds": options.rounds,
            "records": options.records,
            **measure(env, options),
            "goals": GOALS,
            "anchor": ANCHOR,
            "mcp_sdk": metadata.version("mcp"),
            "machine": harness.machine(env),
        }
    result["goals_met"] = goals_met(result)
    harness.emit(result, summary(result), options, HEADLINE)
    return result


def goals_met(result: dict[str, Any]) -> dict[str, bool]:
    added = result["latency"][ERA].get("added_p99_ms")
    per_core = result["throughput"]["gateway"]["per_server_cpu_s"]
    return {
        "added_p99_ms": added is not None and added <= GOALS["added_p99_ms"],
        "calls_per_gateway_core": per_core is not None and per_core >= GOALS["calls_per_gateway_core"],
    }


def summary(result: dict[str, Any]) -> str:
    met = result["goals_met"]
    return "\n".join(
        [
            f"MCP gateway (SDK {result['mcp_sdk']}), one process, federating an echo upstream; "
            f"{result['calls']:,} calls a side one at a time, wrk x{result['connections']} for "
            f"{result['duration_s']:g} s a round (median of {result['rounds']})",
            *latency_lines(result["latency"]),
            *throughput_lines(result["throughput"]),
            *search_lines(result["search_records"]),
            f"  goals: p99 added <= {GOALS['added_p99_ms']:g} ms ({ERA}) "
            f"{'met' if met['added_p99_ms'] else 'NOT met'}; >= {GOALS['calls_per_gateway_core']:,} "
            f"calls per gateway CPU-second {'met' if met['calls_per_gateway_core'] else 'NOT met'}",
        ]
    )


def errors_text(*sides: dict[str, Any]) -> str:
    errors = sum(side["errors"] for side in sides)
    first = next((side["first_error"] for side in sides if side["first_error"]), None)
    return f"  errors {errors}: {first}" if errors else ""


def latency_lines(latency: dict[str, Any]) -> list[str]:
    lines = ["  1. tool call, SDK client, one at a time      p50 ms   p99 ms"]
    for era, sides in latency.items():
        for name in ("direct", "gateway"):
            side = sides[name]
            lines.append(
                f"     {era} {name:<24}{side.get('p50_ms', 0):>8.2f} {side.get('p99_ms', 0):>8.2f}"
                + errors_text(side)
            )
        added = f"{sides.get('added_p50_ms', 0):>8.2f} {sides.get('added_p99_ms', 0):>8.2f}"
        lines.append(f"     {era} {'added (B - A)':<24}{added}")
    return lines


def throughput_lines(calls: dict[str, Any]) -> list[str]:
    lines = ["  2. saturated, wrk                 calls/s  p50 ms  p99 ms  server CPU-s  calls/CPU-s"]
    for name in ("direct", "gateway"):
        side = calls[name]
        lines.append(
            f"     {name:<27}{side['per_s']:>9,.0f} {side['p50_ms']:>7.2f} {side['p99_ms']:>7.2f} "
            f"{side['server_cpu_s']:>13.2f} {side['per_server_cpu_s'] or 0:>12,.0f}"
            + (f"  errors {side['errors']}" if side["errors"] else "")
        )
    spent = ", ".join(f"{name} {seconds:.2f}" for name, seconds in calls["gateway"]["cpu_s"].items())
    lines.append(f"     ratio gateway/direct {calls['ratio']:.3f}; anchor: {ANCHOR}")
    lines.append(
        f"     CPU-s in the gateway's window: {spent}, wrk {calls['gateway']['generator_cpu_s']:.2f}"
    )
    return lines


def search_lines(search: dict[str, Any]) -> list[str]:
    lines = ["  3. search_records, one at a time  REST p50/p99 ms   MCP p50/p99 ms   MCP/REST p50   p99"]
    labels = {
        "post": "plain POST, API cache off",
        "sdk": "SDK client, API cache off",
        "cached": "plain POST, API cache on",
    }
    for name, label in labels.items():
        pair = search[name]
        rest, mcp = pair["rest"], pair["mcp"]
        lines.append(
            f"     {label:<27}{rest.get('p50_ms', 0):>7.2f} {rest.get('p99_ms', 0):>7.2f}   "
            f"{mcp.get('p50_ms', 0):>7.2f} {mcp.get('p99_ms', 0):>7.2f}   {pair.get('ratio_p50', 0):>10.2f} "
            f"{pair.get('ratio_p99', 0):>5.2f}" + errors_text(rest, mcp)
        )
    return lines


if __name__ == "__main__":
    main()
