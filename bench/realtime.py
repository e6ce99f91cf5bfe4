"""The whole real-time path, write -> WebSocket client, against a bare broadcast server's floor.

    uv run --frozen python bench/realtime.py [--connections 2000] [--duration 10] [--json]

Generator processes (bench/ws/subscribers.py) hold --connections `websockets` clients, each
sending `Authorization: Bearer <admin key>` in its handshake: one process on side A, whose rounds
one control connection drives; --generators processes (2) sharing the clients on side B, so that
the 2,000 frames of one event are read by two processes at once rather than queued behind each
other in one (with one, the last client's frame waits for the other 1,999 to be parsed in Python:
that wait, not the service, was most of the p99):

- A, the floor: bench/ws/websockets_server.py, the `websockets` asyncio server (Sophia's stack)
  writing one prepared 200-byte frame to every connection with `broadcast()`.
- B, Sophia: `python -m sophia.realtime` on the run's engines, each client subscribed to
  `system-events` (`{"op": "subscribe", "id": 1, "channel": "system-events"}`); the events go in
  through `POST /api/v1/events` (the API, granian), which publishes them to JetStream, whence the
  service's feed fans each out to every subscriber. Each event's payload carries the
  `time.time_ns()` at which it was posted: latency is its arrival at a client minus that.

Per side: RSS of the server with no client, then with every client connected (and subscribed) and
idle, the difference per connection; deliveries/s saturated (A: rounds back to back, the server
waiting only on full write buffers; B: events posted with at most --in-flight of them not yet
seen by a probe client of this process, so no client's queue nears the service's limit); then
latency at half that rate (rounds or events on a fixed schedule), p50 and p99; CPU of the server,
the API, the engines and the generator in each window. B/A is the ratio of saturated deliveries/s.
Last, the resume cost: with the clients gone, --resume-events events are posted, then one client
subscribes with `since` that many events back and is timed until the last one arrives.

Goals (issue 13): >= 10,000 connections in one process, <= 20 KiB per idle connection, B/A >= 0.5,
p99 <= 50 ms at half of B's rate.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import secrets
import sys
import tempfile
import time
from array import array
from pathlib import Path
from typing import Any

import harness
from harness.realtime import RealtimeProcess
from harness.realtime_load import Posted, Probe, closed_loop, events_client, fixed_rate, resume
from ws.processes import WS_DIR, Generator, Server
from ws_servers import raise_open_files_limit, saturated_then_half, settled_rss

from sophia.engines.process import free_port

CHANNEL = "system-events"
MIB = 1024**2
GOALS = {"connections": 10_000, "rss_per_connection_kib": 20.0, "ratio": 0.5, "p99_ms": 50.0}


HEADLINE = harness.Headline(
    anchor="a bare `websockets` `broadcast()`",
    subject="`sophia.realtime`: events posted to the API",
    a=harness.Figure("floor.saturated.per_s", "deliveries/s"),
    b=harness.Figure("sophia.saturated.per_s", "deliveries/s"),
    goals=(
        harness.Goal(
            f"≥ {GOALS['connections']:,} clients, ≤ {GOALS['rss_per_connection_kib']:g} KiB a connection, "
            f"B/A ≥ {GOALS['ratio']}, p99 ≤ {GOALS['p99_ms']:g} ms at half load",
            path="goals_met",
        ),
    ),
    section="Real-time fan-out",
)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--connections", type=int, default=2000, help="clients held by the generator")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of each measured window")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of load before a window")
    parser.add_argument("--connect-concurrency", type=int, default=100, help="handshakes at once")
    parser.add_argument("--in-flight", type=int, default=32, help="B saturated: events not yet delivered")
    parser.add_argument(
        "--resume-events",
        default="900,10000",
        help="comma-separated: how many events back each resume starts",
    )
    parser.add_argument("--api-workers", type=int, default=1, help="API processes (B)")
    parser.add_argument(
        "--generators", type=int, default=2, help="B: client processes sharing the connections"
    )
    parser.add_argument(
        "--client",
        choices=("raw", "websockets"),
        default="raw",
        help="the clients: raw (bench/ws/raw_client.py, a frame header's cost) or websockets",
    )
    parser.add_argument(
        "--settle", type=float, default=20.0, help="at most this many seconds to wait for a quiet machine"
    )
    harness.add_common_arguments(parser, timed=False)
    options = parser.parse_args(argv)
    options.resume_events = [int(part) for part in options.resume_events.split(",") if part.strip()]
    counts = (options.connections, options.connect_concurrency, options.in_flight, options.api_workers)
    if min(*counts, options.generators) < 1:
        parser.error(
            "--connections, --connect-concurrency, --in-flight, --api-workers and --generators must be >= 1"
        )
    if options.duration <= 0 or options.warmup < 0 or min(options.resume_events, default=1) < 1:
        parser.error("--duration must be > 0, --warmup >= 0, --resume-events >= 1 each")
    return options


class Subscribers(Generator):
    """bench/ws/subscribers.py, spoken to like generator.py (ws/processes.py)."""

    def __init__(self, url: str, log_dir: Path, client: str, number: int = 1) -> None:
        super().__init__(url, "websockets", log_dir)
        self.command = [sys.executable, str(WS_DIR / "subscribers.py"), "--url", url, "--client", client]
        port = url.rsplit(":", 1)[1].split("/")[0]
        self.log_path = log_dir / f"subscribers-{port}-{number}.log"


class SubscriberGroup:
    """Several subscriber processes told the same things at once; their answers are combined."""

    def __init__(self, url: str, log_dir: Path, client: str, count: int) -> None:
        self.members = [Subscribers(url, log_dir, client, number) for number in range(1, count + 1)]
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> SubscriberGroup:
        with self._stack as stack:
            for member in self.members:
                stack.enter_context(member)
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stack.close()

    def roots(self) -> dict[str, int]:
        """CpuSplit's roots: `generator`, `generator-2`, ... (summed by `generator_cores`)."""
        return {
            "generator" if number == 1 else f"generator-{number}": member.pid
            for number, member in enumerate(self.members, 1)
        }

    def send(self, request: dict[str, Any]) -> None:
        for member in self.members:
            member.send(request)

    def expect(self, event: str, timeout_s: float) -> list[dict[str, Any]]:
        return [member.expect(event, timeout_s) for member in self.members]


def generator_cores(cores: dict[str, float]) -> float:
    return round(sum(value for name, value in cores.items() if name.startswith("generator")), 3)


def merged_window(answers: list[dict[str, Any]]) -> dict[str, Any]:
    """One window's result of several generators: their latencies merged, counts added."""
    latencies = array("q")
    for answer in answers:
        latencies.frombytes(base64.b64decode(answer.pop("latencies_ns_b64", "")))
    ordered = sorted(latencies)
    return {
        "frames": sum(answer["frames"] for answer in answers),
        "seconds": max(answer["seconds"] for answer in answers),
        "dropped": sum(answer["dropped"] for answer in answers),
        "connections_open": sum(answer["connections_open"] for answer in answers),
        **{
            name: round(harness.percentile(ordered, fraction) / 1e6, 3) if ordered else None
            for name, fraction in (("p50_ms", 0.5), ("p99_ms", 0.99), ("p999_ms", 0.999), ("max_ms", 1.0))
        },
    }


def connect(
    members: list[Subscribers], options: argparse.Namespace, headers: dict[str, str], channel: str | None
) -> dict[str, Any]:
    """--connections clients shared by `members` as evenly as they go; their answers combined."""
    whole, left = divmod(options.connections, len(members))
    shares = [whole + (1 if number < left else 0) for number in range(len(members))]
    for member, share in zip(members, shares, strict=True):
        member.send(
            {
                "op": "connect",
                "count": share,
                "concurrency": options.connect_concurrency,
                "timeout_s": 10,
                "headers": headers,
                "channel": channel,
            }
        )
    answers = [member.expect("connected", timeout_s=60 + options.connections / 20) for member in members]
    connected = sum(answer["connected"] for answer in answers)
    errors = [answer["error"] for answer in answers if answer["error"]]
    if connected == 0:
        raise RuntimeError(f"no client connected: {errors[0] if errors else 'no answer'}")
    return {
        "connected": connected,
        "connect_failed": sum(answer["failed"] for answer in answers),
        "connect_s": max(answer["seconds"] for answer in answers),
        "connect_error": errors[0] if errors else None,
    }


def memory(rss_base: int, rss_idle: int, connected: int) -> dict[str, Any]:
    return {
        "rss_base_mib": round(rss_base / MIB, 1),
        "rss_idle_mib": round(rss_idle / MIB, 1),
        "rss_per_connection_kib": round((rss_idle - rss_base) / connected / 1024, 2),
    }


def floor(log_dir: Path, headers: dict[str, str], options: argparse.Namespace) -> dict[str, Any]:
    """Side A: the bare `websockets` broadcast server, saturated then at half that rate."""
    port = free_port(harness.HOST)
    with (
        Server("websockets", harness.HOST, port, options.connections, log_dir) as server,
        Subscribers(f"ws://{harness.HOST}:{port}/ws", log_dir, options.client) as generator,
    ):
        generator.send({"op": "control"})
        generator.expect("control", timeout_s=30)
        rss_base = settled_rss(server)
        connected = connect([generator], options, headers, None)
        rss_idle = settled_rss(server)
        saturated, fixed = saturated_then_half(server, generator, options, connected["connected"])
    return {
        **connected,
        **memory(rss_base, rss_idle, connected["connected"]),
        "saturated": saturated,
        "fixed_rate": fixed,
    }


async def sophia_window(
    processes: dict[str, Any], generator: SubscriberGroup, drive: Any, options: argparse.Namespace
) -> dict[str, Any]:
    """One window of side B: `drive(stop, posted)` posts events while the generators count."""
    await asyncio.to_thread(harness.settle, options.settle)
    stop, posted = asyncio.Event(), Posted()
    driver = asyncio.create_task(drive(stop, posted))
    generator.send({"op": "count", "warmup_s": options.warmup, "duration_s": options.duration, "raw": True})
    try:
        await asyncio.to_thread(generator.expect, "window", options.warmup + 30)
        events_before, started = posted.events, time.monotonic()
        roots = {name: process.pid for name, process in processes.items()} | generator.roots()
        with harness.CpuSplit(roots) as cpu, harness.OtherCpu() as other_cpu:
            await asyncio.to_thread(generator.expect, "window_end", options.duration + 30)
        wall_s = time.monotonic() - started
        events = posted.events - events_before
    finally:
        stop.set()
        await asyncio.wait_for(driver, 60)
    result = merged_window(await asyncio.to_thread(generator.expect, "result", 150))
    processes["realtime"].check_running("the real-time service")
    per_s = result["frames"] / result["seconds"]
    cores = {name: round(seconds / wall_s, 3) for name, seconds in cpu.seconds.items()}
    realtime_cores = cores.get("realtime", 0.0)
    return {
        **result,
        "per_s": round(per_s, 1),
        "events": events,
        "events_per_s": round(events / wall_s, 1),
        "post_errors": posted.errors,
        "post_error": posted.first_error,
        "max_late_ms": round(posted.max_late_s * 1000, 1),
        "realtime_cores": realtime_cores,
        "generator_cores": generator_cores(cores),
        "per_realtime_core": round(per_s / realtime_cores, 1) if realtime_cores > 0 else None,
        "cores": cores,
        "other_cpu": other_cpu.share,
    }


async def sophia(
    env: harness.Environment,
    api: harness.ApiServer,
    realtime: RealtimeProcess,
    log_dir: Path,
    options: argparse.Namespace,
) -> dict[str, Any]:
    """Side B: events posted to the API, fanned out by the real-time service to every client."""
    headers = {"Authorization": f"Bearer {env.admin_key}"}
    with SubscriberGroup(realtime.ws_url, log_dir, options.client, options.generators) as generator:
        processes = {"realtime": realtime, "api": api}
        rss_base = await asyncio.to_thread(settled_rss, realtime)
        connected = await asyncio.to_thread(connect, generator.members, options, headers, CHANNEL)
        rss_idle = await asyncio.to_thread(settled_rss, realtime)
        async with (
            events_client(api.base_url, env.admin_key) as client,
            Probe(realtime.ws_url, headers, CHANNEL) as probe,
        ):

            async def saturate(stop: asyncio.Event, posted: Posted) -> None:
                await closed_loop(client, probe, posted, options.in_flight, stop)

            saturated = await sophia_window(processes, generator, saturate, options)
            events_per_s = saturated["per_s"] / connected["connected"] / 2
            if events_per_s <= 0:
                raise RuntimeError(f"no publication arrived while saturating: {saturated}")

            async def half(stop: asyncio.Event, posted: Posted) -> None:
                await fixed_rate(client, posted, events_per_s, stop)

            fixed = await sophia_window(processes, generator, half, options)
            fixed["target_events_per_s"] = round(events_per_s, 2)
            expected = fixed["events"] * connected["connected"]
            fixed["delivered_share"] = round(fixed["frames"] / expected, 3) if expected else None
            probe_dropped = probe.closed
    async with events_client(api.base_url, env.admin_key) as client:
        resumes = [
            await resume(client, realtime.ws_url, headers, CHANNEL, events_back)
            for events_back in options.resume_events
        ]
    metrics = await realtime.metric_sums(
        {"sophia_realtime_slow_consumers_total", "sophia_realtime_frames_total"}
    )
    return {
        **connected,
        **memory(rss_base, rss_idle, connected["connected"]),
        "saturated": saturated,
        "fixed_rate": fixed,
        "probe_closed": probe_dropped,
        "resume": resumes,
        "slow_consumers_dropped": int(metrics["sophia_realtime_slow_consumers_total"]),
        "frames_queued": int(metrics["sophia_realtime_frames_total"]),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    options = parse(argv)
    open_files = raise_open_files_limit(options.connections + 1024)
    with harness.environment() as env, tempfile.TemporaryDirectory(prefix="realtime-") as log_name:
        log_dir = Path(log_name)
        headers = {"Authorization": f"Bearer {env.admin_key}"}
        prefix = f"bench{os.getpid()}-{secrets.token_hex(3)}-"
        extra_env = {"SOPHIA_EVENTS_STREAM_PREFIX": prefix, "SOPHIA_EVENTS_MAX_BYTES": str(512 * MIB)}
        try:
            side_a = floor(log_dir, headers, options)
            with (
                harness.ApiServer(env, workers=options.api_workers, extra_env=extra_env) as api,
                RealtimeProcess(env, extra_env=extra_env) as realtime,
            ):
                side_b = harness.run_async(sophia(env, api, realtime, log_dir, options))
        finally:
            harness.run_async(harness.delete_streams(env.nats_url, prefix))
        a_per_s, b_per_s = side_a["saturated"]["per_s"], side_b["saturated"]["per_s"]
        result = {
            "benchmark": "realtime",
            "connections": options.connections,
            "duration_s": options.duration,
            "warmup_s": options.warmup,
            "in_flight": options.in_flight,
            "api_workers": options.api_workers,
            "generators": options.generators,
            "client": options.client,
            "channel": CHANNEL,
            "open_files_limit": open_files,
            "floor": side_a,
            "sophia": side_b,
            "ratio": round(b_per_s / a_per_s, 3) if a_per_s else 0.0,
            "goals": GOALS,
            "machine": harness.machine(env),
        }
    result["goals_met"] = goals_met(result)
    harness.emit(result, summary(result), options, HEADLINE)
    return result


def goals_met(result: dict[str, Any]) -> dict[str, bool]:
    side = result["sophia"]
    p99 = side["fixed_rate"]["p99_ms"]
    return {
        "connections": side["connected"] >= GOALS["connections"] and side["connect_failed"] == 0,
        "rss_per_connection_kib": side["rss_per_connection_kib"] <= GOALS["rss_per_connection_kib"],
        "ratio": result["ratio"] >= GOALS["ratio"],
        "p99_ms": p99 is not None and p99 <= GOALS["p99_ms"],
    }


def summary(result: dict[str, Any]) -> str:
    a, b = result["floor"], result["sophia"]
    lines = [
        f"real-time fan-out, {result['connections']:,} websockets clients in one generator process (A), "
        f"{result['generators']} (B), "
        f"{result['duration_s']:g} s windows; B: POST /api/v1/events -> JetStream -> sophia.realtime "
        f"-> `{result['channel']}` subscribers",
        f"  ratio B/A deliveries/s {result['ratio']:.3f} (goal >= {GOALS['ratio']})",
        f"  {'side':<22} {'clients':>7} {'KiB/conn':>8} {'deliv/s':>9} {'srv cores':>9} {'gen cores':>9}"
        f" | {'rate/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'deliv':>6} {'gen cores':>9}",
    ]
    for label, side, server_cores, rate_key in (
        ("A websockets broadcast", a, "server_cores", "target_rounds_per_s"),
        ("B sophia.realtime", b, "realtime_cores", "target_events_per_s"),
    ):
        saturated, fixed = side["saturated"], side["fixed_rate"]
        lines.append(
            f"  {label:<22} {side['connected']:>7,} {side['rss_per_connection_kib']:>8.1f} "
            f"{saturated['per_s']:>9,.0f} {saturated[server_cores]:>9.2f} "
            f"{saturated['generator_cores']:>9.2f}"
            f" | {fixed[rate_key]:>7.1f} {fixed['p50_ms'] or 0:>7.2f} {fixed['p99_ms'] or 0:>7.2f} "
            f"{fixed['delivered_share'] or 0:>6.1%} {fixed['generator_cores']:>9.2f}"
        )
    lines += details(result)
    met = result["goals_met"]
    lines.append(
        "  goals: "
        + ", ".join(f"{name} {'met' if ok else 'NOT met'}" for name, ok in met.items())
        + f" (>= {GOALS['connections']:,} connections, <= {GOALS['rss_per_connection_kib']:g} KiB/conn, "
        f"B/A >= {GOALS['ratio']}, p99 <= {GOALS['p99_ms']:g} ms)"
    )
    return "\n".join(lines)


def details(result: dict[str, Any]) -> list[str]:
    a, b = result["floor"], result["sophia"]
    saturated, fixed = b["saturated"], b["fixed_rate"]
    lines = [
        f"  A: RSS {a['rss_base_mib']:.1f} -> {a['rss_idle_mib']:.1f} MiB idle; connected in "
        f"{a['connect_s']:.1f} s; saturated {a['saturated']['per_server_core']:,.0f} deliveries/s per "
        f"server core; dropped {a['saturated']['dropped'] + a['fixed_rate']['dropped']}",
        f"  B: RSS {b['rss_base_mib']:.1f} -> {b['rss_idle_mib']:.1f} MiB idle; connected and subscribed "
        f"in {b['connect_s']:.1f} s, {b['connect_failed']} failed"
        + (f" ({b['connect_error']})" if b["connect_error"] else ""),
        f"    saturated: {saturated['events_per_s']:,.1f} events/s, "
        f"{saturated['per_realtime_core'] or 0:,.0f} deliveries/s per real-time core, p50 "
        f"{saturated['p50_ms'] or 0:.0f} ms, p99 {saturated['p99_ms'] or 0:.0f} ms; CPU cores "
        + ", ".join(f"{name} {cores:.2f}" for name, cores in saturated["cores"].items()),
        f"    half load: {fixed['events']:,} events, p99.9 {fixed['p999_ms'] or 0:.1f} ms, max "
        f"{fixed['max_ms'] or 0:.1f} ms, latest post {fixed['max_late_ms']:.1f} ms late; CPU cores "
        + ", ".join(f"{name} {cores:.2f}" for name, cores in fixed["cores"].items()),
        f"    clients dropped {saturated['dropped'] + fixed['dropped']} (slow consumers by the service: "
        f"{b['slow_consumers_dropped']}); post errors {saturated['post_errors'] + fixed['post_errors']}"
        + (
            f" ({saturated['post_error'] or fixed['post_error']})"
            if saturated["post_error"] or fixed["post_error"]
            else ""
        ),
    ]
    for entry in b["resume"]:
        outcome = (
            f"{entry['received']:,} of {entry['events_back']:,} in {entry['seconds']:.2f} s = "
            f"{entry['per_s']:,.0f} replayed/s"
        )
        if entry["error"]:
            outcome += f"; FAILED: {entry['error']}"
        lines.append(f"    resume {entry['events_back']:,} back (recovered={entry['recovered']}): {outcome}")
    return lines


if __name__ == "__main__":
    main()
