"""Each benchmark, run end to end at toy sizes, still measures both sides and their ratio.

No timing is asserted: these runs exist so that the scripts cannot rot. They use the test session's
engines (SOPHIA_*_URL, set by the root conftest) and a database of their own.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[1]
QUICK = ["--rounds", "1", "--settle", "0", "--json"]

pytestmark = pytest.mark.load


def load(name: str) -> ModuleType:
    """A benchmark script as a module (they import `harness` as a sibling, as when run directly)."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def assert_measured(side: dict[str, Any], *, latency: bool) -> None:
    assert side["operations"] > 0
    assert side["seconds"] > 0
    assert side["per_s"] > 0
    assert side["errors"] == 0
    assert 0 <= side["other_cpu"] <= 1
    if latency:
        assert 0 < side["p50_ms"] <= side["p99_ms"]


def assert_printed(capsys: pytest.CaptureFixture[str], result: dict[str, Any]) -> None:
    assert json.loads(capsys.readouterr().out)["benchmark"] == result["benchmark"]


def test_ingest_writes_every_row_on_both_sides_and_reports_the_ratio(capsys):
    result = load("ingest").main(["--records", "500", "--batch", "200", "--clients", "2", *QUICK])

    assert result["records"] == 500
    assert_measured(result["raw"], latency=False)
    assert_measured(result["api"], latency=False)
    assert result["ratio"] > 0
    assert result["goal"] == 0.6
    assert result["machine"]["cpus"] >= 1
    assert result["machine"]["postgres"]
    assert_printed(capsys, result)


def test_read_measures_raw_lookups_and_api_gets_with_latencies(capsys):
    result = load("read").main(
        ["--records", "500", "--duration", "1", "--warmup", "0", "--connections", "4", *QUICK]
    )

    assert_measured(result["raw"], latency=True)
    assert_measured(result["api"], latency=True)
    assert result["ratio"] > 0
    assert result["goal"] == 0.6
    assert_printed(capsys, result)


def test_server_compares_granian_and_uvicorn_on_both_endpoints(capsys):
    result = load("server").main(
        [
            "--records",
            "200",
            "--duration",
            "1",
            "--warmup",
            "0",
            "--connections",
            "4",
            "--workers",
            "1",
            *QUICK,
        ]
    )

    measured = {(entry["server"], entry["workers"], entry["endpoint"]) for entry in result["results"]}
    assert measured == {
        (server, 1, endpoint) for server in ("granian", "uvicorn") for endpoint in ("records", "healthz")
    }
    for entry in result["results"]:
        assert_measured(entry, latency=True)
    assert set(result["ratios"]) == {"granian/uvicorn records x1", "granian/uvicorn healthz x1"}
    assert all(value > 0 for value in result["ratios"].values())
    assert set(result["fastest"]) == {"records", "healthz"}
    assert_printed(capsys, result)


def test_hot_read_measures_the_bare_app_and_cached_gets_then_a_fixed_rate(capsys):
    result = load("hot_read").main(
        [
            "--records",
            "200",
            "--duration",
            "1",
            "--warmup",
            "1",
            "--connections",
            "4",
            "--rate",
            "100",
            "--rate-duration",
            "1",
            *QUICK,
        ]
    )

    assert_measured(result["raw"], latency=True)
    assert_measured(result["api"], latency=True)
    assert result["ratio"] > 0
    assert result["goal"] == 0.45
    assert 0 < result["l1_hit_share"] <= 1
    for fixed_rate in (result["fixed_rate"]["raw"], result["fixed_rate"]["api"]):
        assert fixed_rate["target_per_s"] == 100
        assert fixed_rate["requests"] > 0
        assert fixed_rate["per_s"] > 0
        assert fixed_rate["failed"] == 0
        assert 0 < fixed_rate["p50_ms"] <= fixed_rate["p99_ms"]
        assert fixed_rate["generator_cpu_s"] > 0
    assert result["in_process_l1_hit_us"] > 0
    assert_printed(capsys, result)


def test_hit_rate_puts_every_lookup_in_one_tier_and_calls_the_loader(capsys):
    result = load("hit_rate").main(["--keys", "2000", "--requests", "5000", "--warmup", "1000", "--json"])

    for window, lookups in (("warmup", 1000), ("measured", 5000)):
        tally = result[window]
        assert tally["lookups"] == lookups
        assert tally["l1_hits"] + tally["l2_hits"] + tally["loads"] == lookups
        rates = tally["l1_hit_rate"] + tally["l2_hit_rate"] + tally["load_rate"]
        assert rates == pytest.approx(1, abs=1e-4)
    assert result["warmup"]["loads"] >= 1
    assert result["l1_capacity"] == 200
    assert 0 < result["l1_held_at_end"] <= 200
    assert all(0 < result["anchors"][name] <= 1 for name in ("ideal_l1_hit_rate", "lru_l1_hit_rate"))
    assert_printed(capsys, result)


def test_stampede_counts_loader_calls_per_cold_key_with_and_without_the_lock(capsys):
    result = load("stampede").main(
        [
            "--processes",
            "3",
            "--concurrent",
            "20",
            "--keys",
            "3",
            "--query-ms",
            "5",
            "--misses",
            "20",
            "--json",
        ]
    )

    assert result["locked"]["lookups"] == result["unlocked"]["lookups"] == 3 * 20 * 3
    assert result["locked"]["loader_calls_per_key"] == 1
    assert result["unlocked"]["loader_calls_per_key"] == 3  # single-flight per process only
    assert result["loader_calls_ratio"] == 3
    assert result["miss_ms_locked"] > 0
    assert result["miss_ms_unlocked"] > 0
    assert_printed(capsys, result)


def test_events_persists_every_accepted_event_and_reports_lag_and_the_anchor(capsys):
    result = load("events").main(
        [
            "--duration",
            "2",
            "--clients",
            "2",
            "--batch",
            "200",
            "--rate",
            "1000",
            "--anchor-duration",
            "1",
            "--anchor-in-flight",
            "100",
            "--progress",
            "1",
            "--stream-max-bytes",
            str(64 * 1024**2),
            "--json",
        ]
    )

    assert result["accepted"] > 0
    assert result["accepted"] % 200 == 0
    assert result["accepted"] <= 1000 * 2  # paced: 1,000 events/s for 2 s, not as fast as taken
    assert result["persisted"] == result["accepted"]
    assert result["persisted_equals_accepted"] is True
    assert result["persisted_per_min"] > 0
    for mode in ("publish", "publish_async"):
        assert result["anchor"][mode]["per_s"] > 0
        assert result["anchor"][mode]["errors"] == 0
    assert result["anchor_per_min"] > 0
    assert result["ratio"] > 0
    assert 0 <= result["lag_p50_ms"] <= result["lag_p99_ms"] <= result["lag_max_ms"]
    assert 0 < result["request_p50_ms"] <= result["request_p99_ms"]
    assert result["workers"]["events_acked_total"] >= result["accepted"]
    assert 0 < result["workers"]["acked_total"] <= result["workers"]["events_acked_total"]  # messages
    assert result["cpu_us_per_event"] > 0  # the four components' CPU over the events persisted
    assert result["cpu_s_sending"]["api"] > 0
    assert result["goal_per_min"] == 1_000_000
    assert_printed(capsys, result)


def test_embed_serves_distinct_texts_uncached_then_at_a_fixed_rate_and_from_the_cache(capsys):
    result = load("embed").main(
        [
            "--texts",
            "64",
            "--batch",
            "16",
            "--duration",
            "1",
            "--warmup",
            "0",
            "--clients",
            "4",
            "--rate-duration",
            "1",
            "--multi",
            "2",
            "--hot",
            "8",
            *QUICK,
        ]
    )

    assert_measured(result["raw"], latency=False)
    assert_measured(result["api"], latency=True)
    assert result["ratio"] > 0
    assert result["goal"] == 0.8
    assert result["api_median"]["cache_hits"] == 0  # every text new: the model answered each
    assert result["api_median"]["mean_server_batch"] >= 1
    assert result["fixed_rate"]["requests"] > 0
    assert result["fixed_rate"]["failed"] == 0
    assert_measured(result["multi"], latency=True)
    assert result["multi"]["per_request"] == 2
    assert_measured(result["cache_hits"], latency=True)
    assert result["cache_hits"]["cache_hits"] > 0
    assert_printed(capsys, result)


def test_search_recall_compares_the_index_with_exact_neighbours(capsys):
    result = load("search_recall").main(
        ["--vectors", "600", "--texts", "60", "--queries", "5", "--ef-search", "10,40", "--json"]
    )

    assert result["vectors"] == 600
    assert [side["ef_search"] for side in result["hnsw"]] == [10, 40]
    for side in result["hnsw"]:
        assert 0 < side["recall"] <= 1
        assert 0 < side["p50_ms"] <= side["p99_ms"]
    assert result["hnsw"][1]["recall"] >= result["hnsw"][0]["recall"]  # a longer list misses no more
    assert result["index_build_s"] >= 0
    assert_printed(capsys, result)


def test_reenrich_runs_both_sides_through_the_enrichment_sink(capsys):
    result = load("reenrich").main(["--records", "70", *QUICK])  # two batches, the second short

    assert result["records"] == 70
    assert_measured(result["embedded"], latency=False)
    assert_measured(result["reused"], latency=False)
    assert result["embedded"]["operations"] == result["reused"]["operations"] == 70
    assert result["ratio"] > 0
    assert_printed(capsys, result)


def test_relay_drain_publishes_the_whole_backlog_and_compares_its_start_with_its_end(capsys):
    result = load("relay_drain").main(["--rows", "5000", "--batch", "500", "--json"])

    assert result["rows"] == 5000
    assert result["start_per_s"] > 0
    assert result["end_per_s"] > 0
    assert result["ratio"] > 0
    assert result["goal"] == 0.8
    assert_printed(capsys, result)


def test_hostile_measures_the_good_client_quiet_then_under_every_attack(capsys):
    result = load("hostile").main(
        [
            "--records",
            "200",
            "--duration",
            "3",
            "--warmup",
            "0",
            "--lead",
            "1",
            "--attack-scale",
            "0.05",
            "--embed-inputs",
            "4",
            "--embed-chars",
            "200",
            "--json",
        ]
    )

    for phase in ("quiet", "attacked"):
        good = result[phase]
        assert good["requests"] > 0
        assert sum(good["statuses"].values()) == good["requests"]  # every answer counted, by status
        assert 0 < good["p50_ms"] <= good["p99_ms"]
        longest = good["second_max_ms"]  # the longest answer of each second of the phase
        assert 3 <= len(longest) <= 5
        assert max(longest) == pytest.approx(good["max_ms"], abs=0.01)
        by_method = good["p99_ms_by_method"]  # reads and writes apart: which of them is the tail
        assert set(by_method) == {"GET", "PUT"}
        assert max(by_method.values()) <= good["max_ms"] + 0.005  # rounded to 0.01 ms, the max to 0.001
    assert result["ratio"] > 0
    assert result["goal"] == 2.0
    attackers = {"made_up_keys", "filters", "cursors", "embeddings", "readyz"}
    assert set(result["attackers"]) == attackers
    for side in result["attackers"].values():
        assert side["requests"] > 0
        assert sum(side["statuses"].values()) == side["requests"]
    assert set(result["attackers"]["made_up_keys"]["statuses"]) <= {"401", "429"}
    assert result["stalled_uploads"]["held"] == 1
    assert result["stalled_uploads"]["opened"] >= 1
    assert {"postgres", "redis-cache"} <= set(result["breakers_before"]) & set(result["breakers_after"])
    assert isinstance(result["breakers_closed_throughout"], bool)
    assert isinstance(result["cache_flushed"], bool)
    assert result["key_lookups_attacked"] >= 0
    assert set(result["cpu_s"]["attacked"]) >= {"api", "k6"}
    delivered = result["attack_delivered"]
    assert delivered["due"] >= sum(side["requests"] for side in result["attackers"].values())
    assert delivered["delivered"] == (delivered["dropped"] <= 0.01 * delivered["due"])
    assert result["attackers_priority"] == "idle"
    assert_printed(capsys, result)


def test_hostile_sends_the_embeddings_attack_to_a_process_of_its_own_when_asked(capsys):
    common = ["--records", "50", "--duration", "2", "--warmup", "0", "--lead", "1", "--attack-scale", "0.05"]
    only = ["--attackers", "embeddings", "--embed-inputs", "2", "--embed-chars", "100", "--json"]
    result = load("hostile").main([*common, *only, "--embeddings-apart"])
    assert result["embeddings_apart"] is True
    embeddings = result["attackers"]["embeddings"]
    assert embeddings["requests"] > 0
    assert sum(embeddings["statuses"].values()) == embeddings["requests"]
    assert result["cpu_s"]["attacked"]["embedder"] > 0  # the process that answered them, counted apart
    assert_printed(capsys, result)


@pytest.mark.parametrize(("given", "taken"), [("idle", "idle"), ("0", "0"), ("19", "19")])
def test_hostile_takes_idle_or_a_nice_step_as_the_attackers_priority(given, taken):
    assert load("hostile").parse(["--attackers-priority", given]).attackers_priority == taken


@pytest.mark.parametrize("given", ["20", "-1", "low", ""])
def test_hostile_refuses_any_other_attackers_priority(given, capsys):
    with pytest.raises(SystemExit):
        load("hostile").parse(["--attackers-priority", given])
    assert "expected idle or a nice step from 0 to 19" in capsys.readouterr().err


def test_a_load_generator_lowered_to_idle_runs_in_linux_idle_class():
    load("hostile")  # puts bench/ on the path for harness
    from harness import k6_mix

    child = subprocess.Popen(["sleep", "5"], preexec_fn=functools.partial(k6_mix._lower, None))
    try:
        assert os.sched_getscheduler(child.pid) == os.SCHED_IDLE
    finally:
        child.kill()
        child.wait()


def test_a_load_generator_lowered_by_nice_steps_runs_that_much_below_this_process():
    load("hostile")  # puts bench/ on the path for harness
    from harness import k6_mix

    child = subprocess.Popen(["sleep", "5"], preexec_fn=functools.partial(k6_mix._lower, 5))
    try:
        ours = os.getpriority(os.PRIO_PROCESS, 0)
        assert os.getpriority(os.PRIO_PROCESS, child.pid) == min(19, ours + 5)
        assert os.sched_getscheduler(child.pid) == os.SCHED_OTHER
    finally:
        child.kill()
        child.wait()


def test_filters_measures_the_old_and_the_indexed_form_and_explains_the_indexed_one(capsys):
    result = load("filters").main(["--records", "2000", "--queries", "10", "--json"])

    assert result["records"] == 2000
    for side in (result["old"], result["product"]):
        assert side["queries"] == 10
        assert side["timeouts"] == 0
        assert side["per_s"] > 0
        assert 0 < side["p50_ms"] <= side["p99_ms"]
    assert set(result["by_class"]) == {"stage", "region", "owner", "account", "absent"}
    for sides in result["by_class"].values():
        assert sides["old"]["queries"] == sides["product"]["queries"] == 2
        assert sides["ratio"] > 0
    assert result["ratio"] > 0
    assert set(result["gin_by_class"]) == set(result["by_class"])
    assert result["gin_by_class"]["account"] is True  # ~10 matches among 2,000: the index answers
    assert "@>" in result["explain"]["sql"]
    assert any("catalog_data_path" in line for line in result["explain"]["plan"])
    assert_printed(capsys, result)


def test_ws_servers_measures_both_locked_stacks_and_skips_picows_only_when_missing(capsys):
    result = load("ws_servers").main(["--connections", "50", "--duration", "1", "--warmup", "0.5", *QUICK])

    assert result["connections"] == 50
    assert result["client"] in {"picows", "websockets"}
    for name in ("granian", "websockets"):
        server = result["servers"][name]
        assert "error" not in server, server
        assert server["connected"] == 50
        assert server["rss_idle_mib"] > 0
        assert server["rss_per_connection_kib"] is not None
        for window in (server["saturated"], server["fixed_rate"]):
            assert window["frames"] > 0
            assert window["per_s"] > 0
            assert 0 < window["p50_ms"] <= window["p99_ms"]
            assert window["server_cores"] >= 0
            assert window["generator_cores"] >= 0
        assert server["fixed_rate"]["target_rounds_per_s"] > 0
    assert ("picows" in result["skipped"]) != ("picows" in result["servers"])
    assert result["recommendation"] in {None, *result["servers"]}
    assert result["reason"]
    assert_printed(capsys, result)


def test_realtime_fans_posted_events_out_to_subscribers_and_measures_the_floor_alike(capsys):
    result = load("realtime").main(
        [
            "--connections",
            "20",
            "--duration",
            "1",
            "--warmup",
            "0.5",
            "--resume-events",
            "50",
            "--settle",
            "0",
            "--json",
        ]
    )

    assert (result["connections"], result["generators"]) == (20, 2)  # B's clients in two processes
    for side in (result["floor"], result["sophia"]):
        assert side["connected"] == 20
        assert side["connect_failed"] == 0
        assert side["rss_idle_mib"] > 0
        assert side["rss_per_connection_kib"] is not None
        for window in (side["saturated"], side["fixed_rate"]):
            assert window["frames"] > 0
            assert window["per_s"] > 0
            assert 0 < window["p50_ms"] <= window["p99_ms"]
            assert window["generator_cores"] >= 0
            assert window["dropped"] == 0
    sophia = result["sophia"]
    for window in (sophia["saturated"], sophia["fixed_rate"]):
        assert window["events"] > 0
        assert window["post_errors"] == 0
        assert window["realtime_cores"] >= 0
    assert sophia["fixed_rate"]["target_events_per_s"] > 0
    assert sophia["probe_closed"] is None
    [resumed] = sophia["resume"]
    assert resumed["events_back"] == 50
    assert resumed["recovered"] is True
    assert resumed["received"] == 50
    assert resumed["error"] is None
    assert result["ratio"] > 0
    assert set(result["goals_met"]) == {"connections", "rss_per_connection_kib", "ratio", "p99_ms"}
    assert_printed(capsys, result)


def test_analytics_checks_raw_sql_against_the_summaries_and_measures_ingest(capsys):
    result = load("analytics").main(
        [
            "--deals",
            "2000",
            "--raw-queries",
            "4",
            "--queries",
            "8",
            "--requests",
            "8",
            "--consumer-changes",
            "200",
            "--ingest-rate",
            "400",
            "--ingest-duration",
            "1",
            "--ingest-batch",
            "50",
            "--progress",
            "1",
            *QUICK,
        ]
    )

    assert result["data"]["deals"] == result["data"]["rebuilt"]["deals"] == 2000
    assert result["data"]["stage_history_rows"] == result["data"]["rebuilt"]["stage_changes"] > 2000
    assert result["data"]["rebuilt"]["conversations"] == 2000  # 1,000 calls and 1,000 messages
    aggregates = {"pipeline", "win-rate", "velocity", "cohorts", "funnel", "sentiment", "topics"}
    assert set(result["queries"]) == set(result["http"]) == aggregates
    for side in result["queries"].values():  # A's answers matched B's, or main raised
        assert side["checked_filters"] == 4
        for measured in (side["raw"], side["summaries"]):
            assert 0 < measured["p50_ms"] <= measured["p99_ms"]
        assert side["ratio_p50"] > 0
    for side in result["http"].values():
        assert 0 < side["uncached"]["p50_ms"] <= side["uncached"]["p99_ms"]
        assert 0 < side["cached"]["p50_ms"] <= side["cached"]["p99_ms"]
    step = result["consumer_step"]
    assert step["changes"] == 200
    assert step["per_s"] > 0
    refresh = result["active_deals_mv_refresh"]
    assert refresh["fill"]["mended"] > 0  # the load wrote around the trigger
    assert refresh["check"]["mended"] == 0
    assert set(result["ingest"]) == {"shipped"}
    for ingest in result["ingest"].values():
        assert 0 < ingest["written"] <= 400  # paced at 400/s for 1 s; none begun after the second
        assert 0 < ingest["deals_changed"] <= ingest["written"]  # a deal may move twice
        assert ingest["applied_per_s"] > 0
        assert ingest["lag_samples"] > 0
        assert 0 < ingest["lag_p50_ms"] <= ingest["lag_p99_ms"] <= ingest["lag_max_ms"]
        assert ingest["stream_events_acked"] >= ingest["written"]
        assert 0 <= ingest["lookup_cpu_s"] <= ingest["cpu_s"]["postgres"]  # in clock ticks: may be 0
    assert {"uncached_p99_ms", "cached_p99_ms", "heaviest_ratio", "lag_p99_ms"} <= set(result["goals_met"])
    assert_printed(capsys, result)


def test_mcp_calls_the_upstream_directly_and_through_the_gateway_and_search_beside_rest(capsys):
    result = load("mcp_gateway").main(["--smoke", "--json"])

    for era in ("2026-07-28", "2025-11-25"):
        sides = result["latency"][era]
        for side in (sides["direct"], sides["gateway"]):
            assert side["calls"] == 20
            assert side["errors"] == 0
            assert 0 < side["p50_ms"] <= side["p99_ms"]
        assert {"added_p50_ms", "added_p99_ms"} <= set(sides)
    calls = result["throughput"]
    for name in ("direct", "gateway"):
        assert_measured(calls[name], latency=True)  # every answer held `"isError":false`
        assert calls[name]["server_cpu_s"] > 0
        assert calls[name]["per_server_cpu_s"] > 0
    assert calls["gateway"]["cpu_s"]["upstream"] > 0  # the gateway's calls reached the upstream
    assert calls["ratio"] > 0
    assert set(result["search_records"]) == {"post", "sdk", "cached"}
    for pair in result["search_records"].values():
        for side in (pair["rest"], pair["mcp"]):
            assert side["calls"] == 20
            assert side["errors"] == 0
            assert 0 < side["p50_ms"] <= side["p99_ms"]
        assert pair["ratio_p50"] > 0
    assert set(result["goals_met"]) == {"added_p99_ms", "calls_per_gateway_core"}
    assert_printed(capsys, result)


def test_asgi_calls_counts_and_times_every_kind_against_the_floor(capsys):
    result = load("asgi_calls").main(["--requests", "20", "--records", "10", "--profile", "put", "--json"])

    assert result["requests"] == 20
    assert set(result["kinds"]) == {"read_by_id", "cached_page", "junk_cursor", "analytics", "put"}
    for figures in (result["floor"], *result["kinds"].values()):
        assert figures["calls"] > 0
        assert figures["cpu_ms"] > 0
    # the front door answers a read by id before FastAPI: fewer calls than the floor of a request
    assert (
        result["kinds"]["read_by_id"]["calls"]
        < result["floor"]["calls"]
        < result["kinds"]["cached_page"]["calls"]
    )
    assert result["ratio"] > 1
    printed = capsys.readouterr()
    assert json.loads(printed.out)["benchmark"] == "asgi_calls"
    assert "put_record" in printed.err  # --profile put: where the PUT's calls went
