"""The WebSocket fan-out server choice: granian's ASGI WebSockets, the `websockets` library's asyncio
server and picows, each broadcasting one 200-byte text frame to the same client load.

    uv run --frozen --with picows python bench/ws_servers.py [--connections 2000] [--duration 10] [--json]

Each candidate (bench/ws/) runs alone in its own process on 127.0.0.1: clients on /ws, a control
connection on /control that starts broadcast rounds. One generator process (bench/ws/generator.py)
holds --connections clients: picows clients when picows is importable, else `websockets` clients;
the same for every server of a run. Per server:

- memory: the server's RSS (its whole process group) with only the control connection, then with
  every client connected and idle; the difference per connection;
- saturation: rounds back to back, the server waiting only while a client's write buffer is full;
  deliveries/s are the frames all clients received in --duration s, after --warmup s;
- latency: rounds at half the saturated rate; a frame's receive time minus the round's start time
  written in its head; p50 and p99;
- CPU of the server and of the generator in each window. They share the machine's cores (and with
  the kernel, whose loopback networking runs in interrupts charged to no process): where those are
  full, deliveries/s is the machine's limit rather than the server's, and deliveries per server
  core (deliveries/s over the server's CPU seconds per second) is the fairer comparison.

The recommendation: among servers whose p99 at half load is under --p99-ms, the most deliveries
per server core; of those within 10% of the best, the least RSS per connection. picows is not in
the lock: without it the script says so and measures the others.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import harness
from ws.kernel_cpu import KernelCpu
from ws.processes import Generator, Server
from ws.rounds import Command

from sophia.engines.process import free_port

SERVERS = ("granian", "websockets", "picows")
MIB = 1024**2
TIE_SHARE = 0.9
"""Servers within this share of the best deliveries per core are tied; the least memory wins."""


HEADLINE = harness.Headline(
    anchor="granian's ASGI WebSockets",
    subject="`websockets` (the server chosen)",
    a=harness.Figure("servers.granian.rss_per_connection_kib", "KiB/idle conn"),
    b=harness.Figure("servers.websockets.rss_per_connection_kib", "KiB/idle conn"),
    ratio=None,
    goals=(
        harness.Goal(
            "≤ 20 KiB per idle connection", path="servers.websockets.rss_per_connection_kib", at_most=20.0
        ),
    ),
    section="WebSocket server for the real-time service",
)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--connections", type=int, default=2000, help="clients held by the generator")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of each measured window")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of broadcast before a window")
    parser.add_argument("--servers", default=",".join(SERVERS), help="comma-separated candidates")
    parser.add_argument("--client", choices=("auto", "picows", "websockets"), default="auto")
    parser.add_argument("--connect-concurrency", type=int, default=100, help="handshakes at once")
    parser.add_argument("--p99-ms", type=float, default=100.0, help="acceptable p99 at half load")
    harness.add_common_arguments(parser, rounds=1)
    options = parser.parse_args(argv)
    options.servers = [name.strip() for name in options.servers.split(",") if name.strip()]
    if not options.servers or not set(options.servers) <= set(SERVERS):
        parser.error(f"--servers takes some of {', '.join(SERVERS)}")
    if min(options.connections, options.rounds, options.connect_concurrency) < 1 or options.duration <= 0:
        parser.error("--connections, --rounds and --connect-concurrency must be >= 1, --duration > 0")
    return options


def raise_open_files_limit(needed: int) -> int:
    """Lift the soft limit on open files to the hard one (children inherit it); the limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, needed)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def saturated_then_half(
    server: Any, generator: Any, options: argparse.Namespace, clients: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Rounds back to back, then rounds at half the rate they reached: both windows' figures, the
    second with its target rate and the share of the frames it should have delivered."""
    total_s = options.warmup + options.duration
    saturated = window(server, generator, Command(total_s), options)
    rounds_per_s = saturated["per_s"] / clients / 2
    if rounds_per_s <= 0:
        raise RuntimeError("no frame arrived while saturating")
    fixed = window(server, generator, Command(total_s, rounds_per_s), options)
    fixed["target_rounds_per_s"] = round(rounds_per_s, 2)
    fixed["delivered_share"] = round(fixed["frames"] / (rounds_per_s * clients * fixed["seconds"]), 3)
    return saturated, fixed


def window(
    server: Server, generator: Generator, command: Command, options: argparse.Namespace
) -> dict[str, Any]:
    """One broadcast command; the generator's count of its window, with the CPU spent meanwhile."""
    harness.settle(options.settle)
    generator.send(
        {"op": "run", "command": command.text(), "warmup_s": options.warmup, "duration_s": options.duration}
    )
    generator.expect("window", timeout_s=options.warmup + 30)
    started = time.monotonic()
    with (
        harness.CpuSplit({"server": server.pid, "generator": generator.pid}) as cpu,
        harness.OtherCpu() as other_cpu,
        KernelCpu() as kernel_cpu,
    ):
        generator.expect("window_end", timeout_s=options.duration + 30)
    wall_s = time.monotonic() - started
    result = generator.expect("result", timeout_s=command.duration_s + 150)
    result.pop("event")
    server.check_running(server.name)
    server_cores = cpu.seconds.get("server", 0.0) / wall_s
    generator_cores = cpu.seconds.get("generator", 0.0) / wall_s
    per_s = result["frames"] / result["seconds"]
    return {
        **result,
        "per_s": round(per_s, 1),
        "server_cores": round(server_cores, 3),
        "generator_cores": round(generator_cores, 3),
        "generator_share": round(generator_cores / len(os.sched_getaffinity(0)), 3),
        "per_server_core": round(per_s / server_cores, 1) if server_cores > 0 else None,
        "other_cpu": other_cpu.share,
        "interrupt_cores": kernel_cpu.interrupt_cores,
        "steal_cores": kernel_cpu.steal_cores,
    }


def settled_rss(server: Server, timeout_s: float = 5.0) -> int:
    """The server's RSS once two samples half a second apart are within 1% (or at `timeout_s`)."""
    previous: int = server.rss_bytes()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        time.sleep(0.5)
        current: int = server.rss_bytes()
        if abs(current - previous) <= previous * 0.01:
            return current
        previous = current
    return previous


def measure(name: str, client: str, log_dir: Path, options: argparse.Namespace) -> dict[str, Any]:
    """Memory with idle clients, saturated deliveries, then latency at half that rate."""
    host = harness.HOST
    port = free_port(host)
    with (
        Server(name, host, port, options.connections, log_dir) as server,
        Generator(f"ws://{host}:{port}/ws", client, log_dir) as generator,
    ):
        generator.send({"op": "control"})
        generator.expect("control", timeout_s=30)
        rss_base = settled_rss(server)
        generator.send(
            {
                "op": "connect",
                "count": options.connections,
                "concurrency": options.connect_concurrency,
                "timeout_s": 10,
            }
        )
        answer = generator.expect("connected", timeout_s=60 + options.connections / 20)
        connected = {
            "connected": answer["connected"],
            "connect_failed": answer["failed"],
            "connect_s": answer["seconds"],
            "connect_error": answer["error"],
        }
        if answer["connected"] == 0:
            raise RuntimeError(f"no client connected: {answer['error']}")
        rss_idle = settled_rss(server)
        saturated, fixed_rate = saturated_then_half(server, generator, options, connected["connected"])
    return {
        **connected,
        "rss_base_mib": round(rss_base / MIB, 1),
        "rss_idle_mib": round(rss_idle / MIB, 1),
        "rss_per_connection_kib": round((rss_idle - rss_base) / connected["connected"] / 1024, 2),
        "saturated": saturated,
        "fixed_rate": fixed_rate,
    }


def recommend(servers: dict[str, dict[str, Any]], p99_ms: float) -> tuple[str | None, str]:
    """The pick and why: deliveries per server core among acceptable p99s, then memory."""
    measured = {
        name: entry
        for name, entry in servers.items()
        if "error" not in entry and entry["saturated"]["per_server_core"] is not None
    }
    acceptable = {
        name: entry
        for name, entry in measured.items()
        if entry["fixed_rate"]["p99_ms"] is not None and entry["fixed_rate"]["p99_ms"] <= p99_ms
    }
    if not acceptable:
        return None, f"no server kept p99 under {p99_ms:g} ms at half load"
    best = max(entry["saturated"]["per_server_core"] for entry in acceptable.values())
    tied = {
        name: entry
        for name, entry in acceptable.items()
        if entry["saturated"]["per_server_core"] >= best * TIE_SHARE
    }
    pick = min(tied, key=lambda name: tied[name]["rss_per_connection_kib"])
    entry = tied[pick]
    reason = (
        f"{pick}: {entry['saturated']['per_server_core']:,.0f} deliveries/s per server core "
        f"(best {best:,.0f}), p99 {entry['fixed_rate']['p99_ms']:.1f} ms at half load, "
        f"{entry['rss_per_connection_kib']:.1f} KiB per idle connection"
    )
    if len(tied) > 1:
        others = ", ".join(sorted(set(tied) - {pick}))
        reason += f"; within {1 - TIE_SHARE:.0%} of {others} on CPU, it holds less memory"
    rejected = sorted(set(measured) - set(acceptable))
    if rejected:
        reason += f"; p99 over {p99_ms:g} ms: {', '.join(rejected)}"
    return pick, reason


def main(argv: list[str] | None = None) -> dict[str, Any]:
    options = parse(argv)
    open_files = raise_open_files_limit(options.connections + 256)
    picows = importlib.util.find_spec("picows") is not None
    skipped = {}
    if "picows" in options.servers and not picows:
        skipped["picows"] = "not importable; run with `uv run --frozen --with picows`"
        print(f"note: skipping picows, {skipped['picows']}", file=sys.stderr)
    client = options.client if options.client != "auto" else ("picows" if picows else "websockets")
    if client == "picows" and not picows:
        raise SystemExit("--client picows needs picows: run with `uv run --frozen --with picows`")
    names = [name for name in options.servers if name not in skipped]
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory(prefix="ws-servers-") as log_dir:
        for _ in range(options.rounds):
            for name in names:  # in turn each round, so a noisy neighbour hits all alike
                try:
                    rounds[name].append(measure(name, client, Path(log_dir), options))
                except (RuntimeError, TimeoutError, OSError) as error:
                    rounds[name].append({"error": f"{type(error).__name__}: {error}"})
                    print(f"{name} failed: {error}", file=sys.stderr)
    servers = {name: median_round(measured) for name, measured in rounds.items()}
    pick, reason = recommend(servers, options.p99_ms)
    result = {
        "benchmark": "ws_servers",
        "connections": options.connections,
        "duration_s": options.duration,
        "warmup_s": options.warmup,
        "rounds": options.rounds,
        "client": client,
        "open_files_limit": open_files,
        "p99_limit_ms": options.p99_ms,
        "servers": servers,
        "skipped": skipped,
        "recommendation": pick,
        "reason": reason,
        "machine": harness.machine(),
    }
    harness.emit(result, summary(result), options, HEADLINE)
    return result


def median_round(measured: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the median saturated deliveries/s (the lower middle one), with every round."""
    good = sorted(
        (entry for entry in measured if "error" not in entry), key=lambda e: e["saturated"]["per_s"]
    )
    chosen = good[(len(good) - 1) // 2] if good else measured[-1]
    return {**chosen, "round_errors": len(measured) - len(good)} if len(measured) > 1 else chosen


def summary(result: dict[str, Any]) -> str:
    lines = [
        f"WebSocket fan-out, {result['connections']:,} {result['client']} clients in one generator process, "
        f"200-byte text frames, {result['duration_s']:g} s windows, median of {result['rounds']} round(s)",
        f"  {'server':<10} {'clients':>7} {'KiB/conn':>8} {'deliv/s':>9} {'srv cores':>9} {'per core':>9} "
        f"{'gen cores':>9} | {'rounds/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'srv cores':>9} {'gen cores':>9}",
    ]
    for name, entry in result["servers"].items():
        if "error" in entry:
            lines.append(f"  {name:<10} failed: {entry['error'].splitlines()[0]}")
            continue
        saturated, fixed = entry["saturated"], entry["fixed_rate"]
        lines.append(
            f"  {name:<10} {entry['connected']:>7,} {entry['rss_per_connection_kib']:>8.1f} "
            f"{saturated['per_s']:>9,.0f} {saturated['server_cores']:>9.2f} "
            f"{saturated['per_server_core'] or 0:>9,.0f} "
            f"{saturated['generator_cores']:>9.2f} | {fixed['target_rounds_per_s']:>8.1f} "
            f"{fixed['p50_ms']:>7.2f} {fixed['p99_ms']:>7.2f} {fixed['server_cores']:>9.2f} "
            f"{fixed['generator_cores']:>9.2f}"
        )
    for name, entry in result["servers"].items():
        if "error" not in entry:
            lines += details(name, entry)
    lines += [f"  skipped {name}: {why}" for name, why in result["skipped"].items()]
    verdict = "recommendation" if result["recommendation"] else "no recommendation"
    lines.append(f"{verdict}: {result['reason']}")
    return "\n".join(lines)


def details(name: str, entry: dict[str, Any]) -> list[str]:
    """What the table leaves out: memory, connections, the latency tail, who else used the CPUs."""
    saturated, fixed = entry["saturated"], entry["fixed_rate"]
    return [
        f"  {name}: RSS {entry['rss_base_mib']:.1f} -> {entry['rss_idle_mib']:.1f} MiB with the clients "
        f"idle; connected in {entry['connect_s']:.1f} s, {entry['connect_failed']} failed; "
        f"{saturated['dropped'] + fixed['dropped']} dropped",
        f"    half load: {fixed['delivered_share']:.0%} delivered, p99.9 {fixed['p999_ms']:.1f} ms, "
        f"max {fixed['max_ms']:.1f} ms, latest round {fixed['max_late_ms']:.1f} ms late",
        f"    saturated: p50 {saturated['p50_ms']:.0f} ms, p99 {saturated['p99_ms']:.0f} ms (queued in "
        f"buffers); others took {saturated['other_cpu']:.0%} of the CPUs; interrupts (loopback "
        f"networking) {saturated['interrupt_cores']:.2f} cores, steal {saturated['steal_cores']:.2f}",
    ]


if __name__ == "__main__":
    main()
