"""The headline table of docs/benchmarks.md: rows from saved results, not-run and failed rows, the
machine line, and a rewrite that touches the marked block only. No engines, no benchmark runs."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[1]


def load_headline() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_headline", BENCH / "headline.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


headline = load_headline()

DOCUMENT = """# Benchmarks

Intro: the table stands between the `<!-- headline -->` and `<!-- /headline -->` lines.

<!-- headline -->
<!-- /headline -->

## Results

```
# a comment in a code block, not a heading
```

## Outbox drain after an outage: `bench/relay_drain.py` (2026-12-05)

## Embeddings served over HTTP
"""
MACHINE = {
    "cpus": 2,
    "cpu_model": "AMD EPYC",
    "cpu_flags": ["avx2", "avx512f", "hypervisor"],
    "memory": "23.5 GiB",
    "kernel": "6.18.44",
    "python": "3.11.7",
    "postgres": "18.6",
    "valkey": "8.1.8",
    "nats": "2.15.1",
}
DECLARED = {
    "ingest": {
        "anchor": "raw COPY",
        "subject": "records:bulk",
        "goal": "B/A ≥ 0.6",
        "ratio_label": "B/A",
        "section": "Results",
    },
    "embed": {
        "anchor": "offline",
        "subject": "served",
        "goal": "B/A ≥ 0.8",
        "ratio_label": "B/A",
        "section": "Embeddings served",
    },
    "relay_drain": {
        "anchor": "last fifth",
        "subject": "first fifth",
        "goal": "",
        "ratio_label": "B/A",
        "section": "Outbox drain",
    },
}


def saved_row(name: str, **changes: Any) -> dict[str, Any]:
    return {
        **DECLARED[name],
        "benchmark": name,
        "a": {"value": 87577.14, "unit": "rows/s"},
        "b": {"value": 56191.0, "unit": "rows/s"},
        "ratio": 0.623,
        "met": 1,
        "judged": 1,
        "date": "2026-12-10T09:30:00+00:00",
        "commit": "f937978",
        "machine": MACHINE,
        **changes,
    }


def rows_of(block: str) -> dict[str, str]:
    return {line.split(" | ")[0]: line for line in block.splitlines() if line.startswith("| [")}


def test_a_saved_result_gives_its_figures_ratio_verdict_date_and_machine():
    block = headline.render(DECLARED, {"ingest": saved_row("ingest")}, {}, DOCUMENT)

    row = rows_of(block)["| [ingest](#results)"]
    assert "raw COPY: **87,577 rows/s**" in row
    assert "records:bulk: **56,191 rows/s**" in row
    assert "B/A **0.623**" in row
    assert "B/A ≥ 0.6: met" in row
    tag = headline.tag(headline.machine_line(MACHINE))
    assert row.endswith(f"| 2026-12-10, `f937978`, machine `{tag}` |")
    assert (
        f"- machine `{tag}`: 2 CPUs, AMD EPYC (avx2 avx512f, virtual), 23.5 GiB, Linux 6.18.44, "
        "Python 3.11.7, PostgreSQL 18.6, Valkey 8.1.8, NATS 2.15.1"
    ) in block.splitlines()


def test_every_declared_benchmark_has_a_row_in_the_order_of_the_sections():
    block = headline.render(DECLARED, {"ingest": saved_row("ingest")}, {}, DOCUMENT)

    assert list(rows_of(block)) == [
        "| [ingest](#results)",
        "| [relay_drain](#outbox-drain-after-an-outage-benchrelay_drainpy-2026-12-05)",
        "| [embed](#embeddings-served-over-http)",
    ]
    not_run = rows_of(block)["| [embed](#embeddings-served-over-http)"]
    assert not_run.endswith("| offline | served | — | B/A ≥ 0.8 | **not run** |")


def test_goals_read_as_met_not_met_k_of_n_or_none_set():
    results = {
        "ingest": saved_row("ingest", met=0),
        "embed": saved_row("embed", met=2, judged=3),
        "relay_drain": saved_row("relay_drain", met=0, judged=0),
    }

    rows = list(rows_of(headline.render(DECLARED, results, {}, DOCUMENT)).values())

    assert "| B/A ≥ 0.6: **not met** |" in rows[0]
    assert "| none set |" in rows[1]
    assert "| B/A ≥ 0.8: 2 of 3 met |" in rows[2]


def test_a_failed_benchmark_says_so_beside_the_figures_it_had():
    results = {"ingest": saved_row("ingest")}
    failed = {"ingest": "2026-12-11", "embed": "2026-12-11"}

    rows = rows_of(headline.render(DECLARED, results, failed, DOCUMENT))

    assert "| **failed** 2026-12-11; figures of 2026-12-10, `f937978`" in rows["| [ingest](#results)"]
    assert rows["| [embed](#embeddings-served-over-http)"].endswith("| **failed** 2026-12-11 |")


def test_a_row_without_a_new_result_keeps_its_row_and_machine_from_the_document():
    earlier = headline.rewrite(
        DOCUMENT, headline.render(DECLARED, {"embed": saved_row("embed")}, {}, DOCUMENT)
    )
    elsewhere = saved_row("ingest", machine={**MACHINE, "cpus": 4})

    block = headline.render(DECLARED, {"ingest": elsewhere}, {}, earlier)

    embed = rows_of(block)["| [embed](#embeddings-served-over-http)"]
    assert embed == rows_of(headline.block(earlier))["| [embed](#embeddings-served-over-http)"]
    machines = [line for line in block.splitlines() if line.startswith("- machine ")]
    assert [line.split(": ", 1)[1].split(",")[0] for line in machines] == ["4 CPUs", "2 CPUs"]


def test_rewriting_replaces_the_marked_block_and_nothing_else():
    block = headline.render(DECLARED, {"ingest": saved_row("ingest")}, {}, DOCUMENT)

    once = headline.rewrite(DOCUMENT, block)
    twice = headline.rewrite(once, headline.render(DECLARED, {"ingest": saved_row("ingest")}, {}, once))

    before, after = DOCUMENT.split("\n<!-- headline -->\n")[0], DOCUMENT.split("\n<!-- /headline -->\n")[1]
    assert once.startswith(before + "\n<!-- headline -->\n| benchmark |")
    assert once.endswith("\n<!-- /headline -->\n" + after)
    assert twice == once
    with pytest.raises(ValueError, match="no <!-- headline -->"):
        headline.rewrite("# Benchmarks\n", block)


def test_a_result_makes_the_row_its_script_declares():
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    from harness.report import Figure, Goal, Headline  # the harness imports the stack: only here

    declared = Headline(
        anchor="uvicorn",
        subject="granian",
        a=Figure("results.server=uvicorn,workers=2.per_s", "req/s"),
        b=Figure("results.-1.share", "%", scale=100),
        goals=(Goal("B ≥ 40 %", path="results.-1.share", at_least=0.4), Goal("flags", path="met")),
        section="Results",
    )
    result = {
        "benchmark": "server",
        "results": [
            {"server": "uvicorn", "workers": 2, "per_s": 2538.0},
            {"server": "granian", "workers": 2, "share": 0.5},
        ],
        "ratio": 1.37,
        "met": {"one": True, "two": False, "which": "not a flag"},
        "machine": MACHINE,
    }

    row = declared.row(result)

    assert row["a"] == {"value": 2538.0, "unit": "req/s"}
    assert row["b"] == {"value": 50.0, "unit": "%"}
    assert (row["ratio"], row["met"], row["judged"]) == (1.37, 2, 3)
    assert row["goal"] == "B ≥ 40 %; flags"
    assert row["machine"] == MACHINE
    assert row["date"] > "2026"
    rendered = rows_of(headline.render({"server": declared.declared()}, {"server": row}, {}, DOCUMENT))
    assert "| B ≥ 40 %; flags: 2 of 3 met |" in rendered["| [server](#results)"]
