"""Hostile clients cannot take Sophia down: a well-behaved client measured quiet, then under attack.

    uv run python bench/hostile.py [--records 10000] [--duration 30] [--rate 40] [--attack-scale 1] [--json]

The good client (k6, open loop at `--rate` a second, from 127.0.0.1, an admin key) alternates
`GET /api/v1/records/{a seeded id}` and `PUT /api/v1/records/hostile/deal/good-{n % 50}`: alone
first, then while every attacker runs at once: 16 bulk uploads that stall after their first NDJSON
line (raw sockets; one reopened each time the API answers 408 after SOPHIA_BODY_IDLE_TIMEOUT_S,
`--body-idle-timeout` here), 500 req/s of made-up keys shaped like real ones, 100 req/s each of
random `data.<key>=<value>` filters and of junk cursors, 10 req/s of `POST /v1/embeddings` with
`--embed-inputs` distinct inputs of `--embed-chars` characters (default: the largest body the API
reads; 256 x 20,000 characters is refused 413 from its Content-Length before any of it is read),
and 200 req/s of `GET /readyz` without a key. The attackers with valid keys come from one address
(`--attackers-from`), the made-up keys from another (`--guessers-from`): the API limits failed keys
per address, which would otherwise refuse everyone sharing it. `--attack-scale` multiplies every
attacker's rate and the stalled uploads. The attack starts `--lead` s before the good client.
Attackers are other machines, but here their load generator shares the API's two cores, where it
took 0.6-0.7 of a core at normal priority (more than the API spent on them). So the attackers' k6
runs at `--attackers-priority`: `idle` (the default: Linux's SCHED_IDLE class, CPU that no other
process wants, yielded at once when one does) or a number of nice steps below normal (10 was the
default until 2026-12-07). It still sends at the stated rates, and an attack that fell behind them
(over 1 % of its requests dropped) does not count as delivered, nor the goal as met. The good
client (the measurement) and the API are never lowered.

Printed: the good client's errors (anything but 2xx, transport errors included), p50 and p99 on
each side and the ratio of the p99s; each attacker's answers by status; from /metrics, Redis and
the API's log: the circuit breakers (state before and after, every transition), PostgreSQL key
lookups, and whether the cache was flushed (its epoch in Redis moved); CPU seconds by component.
Goal: no errors, attacked p99 at most 2x quiet, every breaker closed throughout, no flush, the
attack delivered.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import secrets
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

import asyncpg
import harness
import httpx
import orjson
import redis
from harness.k6_mix import Traffic, k6_mix
from harness.stalled import Stalls, chunked_request, hold_stalled
from prometheus_client.parser import text_string_to_metric_families

from sophia.database import keys
from sophia.shared.settings import Settings

GOAL_P99_RATIO = 2.0
DELIVERED_SHARE = 0.01
"""An attack whose k6 dropped more of its requests due than this share fell behind its rates."""
STALLED_UPLOADS = 16
ATTACK_PER_S = {"made_up_keys": 500, "filters": 100, "cursors": 100, "embeddings": 10, "readyz": 200}
ATTACKERS = ("stalled_uploads", *ATTACK_PER_S)
TIMEOUT_S = 10
MAX_BODY_BYTES = Settings.model_fields["max_body_bytes"].default
LOGGED = ("warning", "error", "critical")

K6_SCRIPT = """
import http from 'k6/http';
import exec from 'k6/execution';
import { SharedArray } from 'k6/data';

const env = __ENV;
const ids = new SharedArray('ids', () => open(env.IDS_FILE).split('\\n').filter((id) => id !== ''));
const timeout = `${env.TIMEOUT_S}s`;
const json = (key) => ({ headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json' },
  timeout });
const admin = json(env.ADMIN_KEY);
const reader = json(env.READ_KEY);

const LOWER = 'abcdefghijklmnopqrstuvwxyz';
const ALNUM = LOWER + LOWER.toUpperCase() + '0123456789';
const random = (alphabet, length) => {
  let text = '';
  for (let i = 0; i < length; i++) text += alphabet[Math.floor(Math.random() * alphabet.length)];
  return text;
};
const chars = parseInt(env.EMBED_CHARS, 10);
const prefix = Math.min(12, chars);
const filler = ' renewal pricing discount competitor'.repeat(1 + chars / 36).slice(0, chars - prefix);

export function good() {
  const n = exec.scenario.iterationInTest;
  if (n % 2 === 0) {
    http.get(`${env.BASE_URL}/api/v1/records/${ids[Math.floor(Math.random() * ids.length)]}`, admin);
  } else {
    const body = JSON.stringify({ data: { n } });
    http.put(`${env.BASE_URL}/api/v1/records/hostile/deal/good-${n % 50}`, body, admin);
  }
}
export function made_up_keys() {
  const key = `sk_${random('0123456789abcdef', 8)}_${random(ALNUM + '_-', 43)}`;
  http.get(`${env.BASE_URL}/api/v1/records`, { headers: { Authorization: `Bearer ${key}` }, timeout });
}
export function filters() {
  http.get(`${env.BASE_URL}/api/v1/records?data.${random(LOWER, 8)}=${random(ALNUM, 10)}&limit=50`, reader);
}
export function cursors() {
  http.get(`${env.BASE_URL}/api/v1/records?cursor=${random(ALNUM + '+/', 40)}!*`, reader);
}
export function embeddings() {  // every input new (a random start), so the prediction cache never answers
  const inputs = [];
  for (let i = 0; i < parseInt(env.EMBED_INPUTS, 10); i++) inputs.push(random(ALNUM, prefix) + filler);
  const body = `{"model":"all-MiniLM-L6-v2","input":["${inputs.join('","')}"]}`;
  http.post(`${env.EMBED_URL}/v1/embeddings`, body, reader);
}
export function readyz() { http.get(`${env.BASE_URL}/readyz`, { timeout }); }
"""


HEADLINE = harness.Headline(
    anchor="the well-behaved client alone",
    subject="the same client beside every attacker at once",
    a=harness.Figure("quiet.p99_ms", "ms p99"),
    b=harness.Figure("attacked.p99_ms", "ms p99"),
    goals=(
        harness.Goal(
            f"no errors, p99 ≤ {GOAL_P99_RATIO:g}× quiet, breakers closed, no cache flush, attack delivered",
            path="goal_met",
        ),
    ),
    section="Hostile clients",
)


def attackers_priority(text: str) -> str:
    """`idle`, or a whole number of nice steps from 0 to 19 (argparse's type for the option)."""
    if text == "idle" or (text.isdigit() and int(text) <= 19):
        return text
    raise argparse.ArgumentTypeError(f"expected idle or a nice step from 0 to 19, got {text!r}")


def priority_words(priority: str) -> str:
    return "SCHED_IDLE" if priority == "idle" else f"nice {priority}"


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--records", type=int, default=10_000, help="records seeded, read by id")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds the good client runs a side")
    parser.add_argument("--rate", type=float, default=40.0, help="good client's requests a second")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of the good client unmeasured")
    parser.add_argument("--lead", type=float, default=5.0, help="seconds of attack before measuring")
    parser.add_argument("--attack-scale", type=float, default=1.0, help="multiplies every attacker")
    parser.add_argument("--attackers-from", default="127.0.0.2", help="address of most attackers")
    parser.add_argument("--guessers-from", default="127.0.0.3", help="address of the made-up keys")
    parser.add_argument(
        "--attackers-priority",
        type=attackers_priority,
        default="idle",
        help="the attackers' k6: idle (SCHED_IDLE) or nice steps below normal (0-19)",
    )
    parser.add_argument(
        "--server",
        choices=("granian", "uvicorn"),
        default=harness.DEFAULT_SERVER,
        help="the API's ASGI server",
    )
    parser.add_argument("--body-idle-timeout", type=float, default=10.0, help="SOPHIA_BODY_IDLE_TIMEOUT_S")
    parser.add_argument(
        "--attackers",
        default=",".join(ATTACKERS),
        help=f"which attack (default: all of {','.join(ATTACKERS)})",
    )
    parser.add_argument(
        "--embeddings-apart",
        action="store_true",
        help="send the embeddings attack to a process of its own (one more API, one worker), as an ML "
        "service apart from the API would take it",
    )
    parser.add_argument("--embed-inputs", type=int, default=256, help="inputs of an embeddings request")
    parser.add_argument("--embed-chars", type=int, help="characters an input (default: the body limit's)")
    harness.add_common_arguments(parser, timed=False)
    options = parser.parse_args(argv)
    if min(options.records, options.embed_inputs) < 1 or min(options.duration, options.rate) <= 0:
        parser.error("--records and --embed-inputs must be >= 1, --duration and --rate > 0")
    if min(options.warmup, options.lead, options.attack_scale) < 0 or options.body_idle_timeout <= 0:
        parser.error("--warmup, --lead and --attack-scale must be >= 0, --body-idle-timeout > 0")
    options.attackers = options.attackers.split(",") if options.attackers else []
    if unknown := set(options.attackers) - set(ATTACKERS):
        parser.error(f"unknown --attackers {', '.join(sorted(unknown))}")
    if options.embed_chars is None:  # `{"model":"...","input":["text","text"]}` under the limit
        options.embed_chars = (MAX_BODY_BYTES - 64) // options.embed_inputs - 3
    return options


@dataclass(frozen=True)
class Load:
    """The API under test, what the k6 script reads from its environment, and the options."""

    api: harness.ApiServer
    variables: dict[str, str]
    options: argparse.Namespace
    embedder: harness.ApiServer | None = None
    """The process the embeddings attack goes to when not the API (`--embeddings-apart`)."""

    async def run(
        self, per_s: dict[str, float], duration_s: float, source: str, nice: int | None = 0
    ) -> dict[str, Traffic]:
        latency_s = 0.5 if "good" in per_s else 0.1
        return await k6_mix(
            K6_SCRIPT,
            per_s,
            duration_s=duration_s,
            variables=self.variables,
            source=source,
            latency_s=latency_s,
            timeout_s=TIMEOUT_S,
            nice=nice,
            seconds="good" in per_s,  # the good client's longest answer of each second
        )


@dataclass
class Phase:
    """One side: the good client, the attackers (none when quiet), and the CPU each part took."""

    good: Traffic
    attackers: dict[str, Traffic]
    stalls: Stalls
    cpu_s: dict[str, float]


def stalled_uploads(options: argparse.Namespace, scale: float) -> int:
    return math.ceil(STALLED_UPLOADS * scale) if "stalled_uploads" in options.attackers else 0


async def run_phase(load: Load, write_key: str, scale: float) -> tuple[Traffic, dict[str, Traffic], Stalls]:
    options = load.options
    stop, stalls = asyncio.Event(), Stalls()
    line = b'{"source_system":"hostile","kind":"deal","external_id":"stalled","data":{}}\n'
    headers = {"Authorization": f"Bearer {write_key}", "Content-Type": "application/x-ndjson"}
    upload = chunked_request(load.api.port, "/api/v1/records:bulk", headers, line)
    held = stalled_uploads(options, scale)
    source = options.attackers_from
    stalling = asyncio.create_task(
        hold_stalled(upload, port=load.api.port, count=held, stop=stop, stalls=stalls, source=source)
    )
    # Made-up keys from an address of their own: the API's limit on failed keys per address is met
    # by them, not by the attackers with valid keys (nor the good client).
    chosen = {name: rate * scale for name, rate in ATTACK_PER_S.items() if name in options.attackers}
    attack_per_s = {name: rate for name, rate in chosen.items() if rate > 0}
    guesses = {name: rate for name, rate in attack_per_s.items() if name == "made_up_keys"}
    others = {name: rate for name, rate in attack_per_s.items() if name != "made_up_keys"}
    span = options.lead + options.duration + 3  # outlasts the good client's start
    runs = [(guesses, options.guessers_from), (others, options.attackers_from)]
    nice = None if options.attackers_priority == "idle" else int(options.attackers_priority)
    attacks = [asyncio.create_task(load.run(per_s, span, source, nice)) for per_s, source in runs if per_s]
    try:
        if held or attacks:
            await asyncio.sleep(options.lead)
        watcher = asyncio.create_task(stalls.watch())
        good = (await load.run({"good": options.rate}, options.duration, harness.HOST))["good"]
        watcher.cancel()
        attackers = {name: side for attack in attacks for name, side in (await attack).items()}
    finally:
        stop.set()
        await stalling
        for attack in attacks:
            attack.cancel()
    return good, attackers, stalls


def phase(load: Load, write_key: str, scale: float) -> Phase:
    assert load.api.pid is not None
    roots = {"api": load.api.pid}
    if load.embedder is not None and load.embedder.pid is not None:
        roots["embedder"] = load.embedder.pid
    # k6, run to its end by this process, apart from this process's own work
    with harness.CpuSplit(roots, reaped_as={"benchmark": "k6"}) as split:
        good, attackers, stalls = harness.run_async(run_phase(load, write_key, scale))
    return Phase(good, attackers, stalls, split.seconds)


def server_state(load: Load, epoch_key: str) -> dict[str, Any]:
    """Breakers (0 closed, 1 half-open, 2 open), key lookups so far, the cache's epoch in Redis."""
    headers = {"Authorization": f"Bearer {load.api.env.admin_key}"}
    text = httpx.get(f"{load.api.base_url}/metrics", headers=headers, timeout=10).raise_for_status().text
    breakers, lookups = {}, 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "sophia_breaker_state":
                breakers[sample.labels["dependency"]] = int(sample.value)
            elif sample.name == "sophia_api_key_lookups_total":
                lookups += sample.value
    with redis.Redis.from_url(load.api.env.redis_url) as client:
        epoch = client.get(epoch_key)
    return {
        "breakers": breakers,
        "key_lookups": lookups,
        "cache_epoch": epoch.decode() if epoch is not None else None,
        "log_bytes": load.api.log_path.stat().st_size,
    }


def logged(load: Load, since: int) -> dict[str, Any]:
    """From the API's log since byte `since`: breaker transitions, L1 drops, warnings by what they
    say, the last of them, and the requests logged (those slow or failed) by route and status."""
    with load.api.log_path.open("rb") as log:
        log.seek(since)
        lines = log.read().splitlines()
    transitions, dropped, warnings, requests = [], Counter[str](), Counter[str](), Counter[str]()
    last_warnings: deque[str] = deque(maxlen=8)
    for line in lines:
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue  # the server's own lines, not the API's
        if not isinstance(entry, dict):
            continue
        event = entry.get("event")
        if event == "breaker_state":
            transitions.append(f"{entry.get('dependency')} {entry.get('state')} {entry.get('timestamp')}")
        elif event == "cache_l1_dropped":
            dropped[str(entry.get("reason"))] += 1
        elif event == "request":  # logged only when slow or failed
            requests[f"{entry.get('method')} {entry.get('route')} {entry.get('status')}"] += 1
        if entry.get("level") in LOGGED:
            said = entry.get("detail") or entry.get("error") or entry.get("state") or ""
            warnings[f"{event}: {said}"[:120]] += 1
            last_warnings.append(line.decode(errors="replace")[:400])
    return {
        "breaker_transitions": transitions,
        "l1_dropped": dict(dropped),
        "warnings": dict(warnings.most_common(10)),
        "last_warnings": list(last_warnings),
        "slow_or_failed_requests": dict(requests.most_common(12)),
    }


async def attacker_keys(database_url: str) -> tuple[str, str]:
    """A read key and a write key of the attackers' own (valid keys, so only their use is hostile)."""
    connection = await asyncpg.connect(database_url, timeout=10)
    try:
        _, read_key = await keys.create(connection, "hostile-read", "read")
        _, write_key = await keys.create(connection, "hostile-write", "write")
    finally:
        await connection.close(timeout=10)
    return read_key, write_key


def measure(env: harness.Environment, options: argparse.Namespace) -> dict[str, Any]:
    ids = harness.run_async(harness.seed(env.database_url, options.records))
    read_key, write_key = harness.run_async(attacker_keys(env.database_url))
    prefix = f"sophia:bench-hostile-{secrets.token_hex(4)}:cache:"
    extra_env = {
        "SOPHIA_ML_ENABLED": "true",
        "SOPHIA_CACHE_KEY_PREFIX": prefix,
        "SOPHIA_BODY_IDLE_TIMEOUT_S": str(options.body_idle_timeout),
    }
    ids_file = env.work_dir / "hostile-ids.txt"
    ids_file.write_text("\n".join(ids) + "\n")
    variables = {
        "IDS_FILE": str(ids_file),
        "ADMIN_KEY": env.admin_key,
        "READ_KEY": read_key,
        "TIMEOUT_S": str(TIMEOUT_S),
        "EMBED_INPUTS": str(options.embed_inputs),
        "EMBED_CHARS": str(options.embed_chars),
    }
    with contextlib.ExitStack() as stack:
        api = stack.enter_context(
            harness.ApiServer(env, server=options.server, extra_env=extra_env, ready_timeout_s=180)
        )
        embedder = None
        if options.embeddings_apart:
            embedder = stack.enter_context(
                harness.ApiServer(
                    env, server=options.server, workers=1, extra_env=extra_env, ready_timeout_s=180
                )
            )
        embed_url = api.base_url if embedder is None else embedder.base_url
        load = Load(api, {**variables, "BASE_URL": api.base_url, "EMBED_URL": embed_url}, options, embedder)
        if options.warmup > 0:
            harness.run_async(load.run({"good": options.rate}, options.warmup, harness.HOST))
        start = server_state(load, f"{prefix}epoch")
        quiet = phase(load, write_key, 0.0)
        before = server_state(load, f"{prefix}epoch")
        attacked = phase(load, write_key, options.attack_scale)
        after = server_state(load, f"{prefix}epoch")
        return {
            "quiet": quiet,
            "attacked": attacked,
            "before": before,
            "after": after,
            "quiet_log": logged(load, start["log_bytes"]),
            "attacked_log": logged(load, before["log_bytes"]),
        }


def tally(counts: dict[str, int]) -> str:
    """`a x 3, b x 1`: counts by what they count."""
    return ", ".join(f"{status} x {count:,}" for status, count in sorted(counts.items())) or "none"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    options = parse(argv)
    with harness.environment() as env:
        run = measure(env, options)
        machine = harness.machine(env)
    quiet, attacked, before, after = run["quiet"], run["attacked"], run["before"], run["after"]
    ratio = attacked.good.p99_ms / quiet.good.p99_ms if quiet.good.p99_ms > 0 else 0.0
    stalls = attacked.stalls
    transitions = run["quiet_log"]["breaker_transitions"] + run["attacked_log"]["breaker_transitions"]
    closed = not transitions and not any(before["breakers"].values()) and not any(after["breakers"].values())
    flushed = before["cache_epoch"] != after["cache_epoch"] or "cleared" in run["attacked_log"]["l1_dropped"]
    faultless = quiet.good.errors + attacked.good.errors + quiet.good.dropped + attacked.good.dropped == 0
    due = sum(side.requests + side.dropped for side in attacked.attackers.values())
    missed = sum(side.dropped for side in attacked.attackers.values())
    delivered = missed <= DELIVERED_SHARE * due
    result = {
        "benchmark": "hostile",
        "records": options.records,
        "duration_s": options.duration,
        "rate": options.rate,
        "attack_scale": options.attack_scale,
        "attackers_priority": options.attackers_priority,
        "server": options.server,
        "attackers_from": options.attackers_from,
        "guessers_from": options.guessers_from,
        "embed_request": {"inputs": options.embed_inputs, "chars": options.embed_chars},
        "embeddings_apart": options.embeddings_apart,
        "quiet": quiet.good.as_dict(),
        "attacked": attacked.good.as_dict(),
        "ratio": round(ratio, 3),
        "goal": GOAL_P99_RATIO,
        "attackers": {name: measured.as_dict() for name, measured in attacked.attackers.items()},
        "stalled_uploads": {
            "held": stalled_uploads(options, options.attack_scale),
            "opened": stalls.opened,
            "fewest_hanging": stalls.fewest_hanging,
            "statuses": dict(stalls.answers),
        },
        "breakers_before": before["breakers"],
        "breakers_after": after["breakers"],
        "breakers_closed_throughout": closed,
        "cache_epoch_before": before["cache_epoch"],
        "cache_epoch_after": after["cache_epoch"],
        "cache_flushed": flushed,
        "key_lookups_attacked": round(after["key_lookups"] - before["key_lookups"]),
        "server_log": {"quiet": run["quiet_log"], "attacked": run["attacked_log"]},
        "cpu_s": {"quiet": quiet.cpu_s, "attacked": attacked.cpu_s},
        "attack_delivered": {"due": due, "dropped": missed, "delivered": delivered},
        "goal_met": faultless and 0 < ratio <= GOAL_P99_RATIO and closed and not flushed and delivered,
        "k6": harness.k6_version(),
        "machine": machine,
    }
    harness.emit(result, summary(result, options), options, HEADLINE)
    return result


def slow_seconds(label: str, side: dict[str, Any], quiet_p99_ms: float) -> str:
    """How many seconds of a phase held an answer slower than the goal allows: a tail from a few bad
    seconds (a burst) reads differently from one spread over the whole phase (queueing)."""
    longest = side["second_max_ms"]
    over = sum(ms > GOAL_P99_RATIO * quiet_p99_ms for ms in longest)
    return (
        f"  {label:<9}seconds with an answer over {GOAL_P99_RATIO:g}x the quiet p99: {over} of {len(longest)}"
        f"  (longest answer a second: {', '.join(f'{ms:.0f}' for ms in longest)} ms)"
    )


def summary(result: dict[str, Any], options: argparse.Namespace) -> str:
    def good(label: str, side: dict[str, Any]) -> str:
        by_method = ", ".join(
            f"{method} {ms:.2f} ms" for method, ms in (side["p99_ms_by_method"] or {}).items()
        )
        return (
            f"  {label:<9}{side['requests']:>7,} requests  errors {side['errors']:,}"
            f"  dropped {side['dropped']:,}"
            f"  p50 {side['p50_ms']:7.2f} ms  p99 {side['p99_ms']:8.2f} ms  max {side['max_ms']:8.2f} ms"
            f"  ({tally(side['statuses'])}; p99 by method {by_method})"
        )

    stalled, log = result["stalled_uploads"], result["server_log"]["attacked"]
    attack = result["attack_delivered"]
    transitions = Counter(" ".join(entry.split()[:2]) for entry in log["breaker_transitions"])
    lines = [
        f"a good client at {options.rate:g} req/s (GET by id, PUT) for {options.duration:g} s, quiet "
        f"then under attack (x{options.attack_scale:g}; from {options.attackers_from}, made-up keys "
        f"from {options.guessers_from}; the API on {options.server}"
        f"{'; the embeddings attack to a process of its own' if options.embeddings_apart else ''})",
        good("quiet", result["quiet"]),
        good("attacked", result["attacked"]),
        f"  ratio attacked p99 / quiet p99 {result['ratio']:.2f} (goal <= {GOAL_P99_RATIO:g})",
        *(slow_seconds(label, result[label], result["quiet"]["p99_ms"]) for label in ("quiet", "attacked")),
        "  attackers:",
        *(
            f"    {name:<13}{side['target_per_s']:>7,.1f}/s {side['requests']:>8,} sent  dropped "
            f"{side['dropped']:,}  p99 {side['p99_ms']:8.1f} ms  {tally(side['statuses'])}"
            for name, side in result["attackers"].items()
        ),
        f"    stalled bulk uploads: {stalled['held']} held (fewest at once {stalled['fewest_hanging']}), "
        f"{stalled['opened']} opened, answers {tally(stalled['statuses'])}",
        f"    attack delivered: {'yes' if attack['delivered'] else 'no'} ({attack['dropped']:,} of "
        f"{attack['due']:,} requests due were dropped by k6; at most {DELIVERED_SHARE:.0%} may be), "
        f"attackers' k6 at {priority_words(options.attackers_priority)}",
        f"  breakers {result['breakers_before']} -> {result['breakers_after']}, transitions under attack "
        f"{tally(transitions)}; cache epoch {result['cache_epoch_before']} -> "
        f"{result['cache_epoch_after']} (flushed: {result['cache_flushed']}); PostgreSQL key lookups "
        f"{result['key_lookups_attacked']:,} under attack (each 401 to a made-up key is one)",
        f"  API log under attack: slow or failed requests {log['slow_or_failed_requests'] or 'none'}",
        "  warnings under attack:" if log["warnings"] else "  no warnings under attack",
        *(f"    {count:>6,} x {said}" for said, count in log["warnings"].items()),
        f"  CPU-s quiet {result['cpu_s']['quiet']}",
        f"  CPU-s attacked {result['cpu_s']['attacked']}",
        f"  goal met: {'yes' if result['goal_met'] else 'no'} (goal: no errors, p99 at most "
        f"{GOAL_P99_RATIO:g}x quiet, breakers closed throughout, no cache flush, attack delivered)",
        *(
            []
            if result["goal_met"]
            else ["  last warnings:", *(f"    {line}" for line in log["last_warnings"])]
        ),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
