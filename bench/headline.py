"""The headline table at the top of docs/benchmarks.md: every benchmark in one row, from its saved result.

    uv run python bench/headline.py [--results .sophia/bench] [--doc docs/benchmarks.md]

A benchmark run with `--save DIR` (or with SOPHIA_BENCH_RESULTS=DIR) leaves DIR/<name>.json, whose
`headline` is its row; `make bench` runs every benchmark so, leaves DIR/<name>.failed (the date) for
one that fails, then runs this. Only the block between MARKS is rewritten. Each row names the
benchmark (linked to its section), side A (the anchor) and side B (Sophia) with one figure each, the
ratio, the goals and how many were met, and when, on which commit and on which machine it was
measured; the machines are listed under the table by the tag the rows give them. The benchmarks are
the scripts that declare a HEADLINE, in the order of their sections. One with no saved result keeps
the row the table had (dated, so it is not taken for a new figure), or is listed as not run; one
that failed says so, beside the figures it had before. Exits 1 when one failed.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import re
import sys
from pathlib import Path
from typing import Any

import orjson

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
MARKS = ("<!-- headline -->", "<!-- /headline -->")
HEADER = (
    "| benchmark | A: the anchor | B: Sophia | ratio | goal | measured |\n"
    "| --- | --- | --- | --- | --- | --- |"
)
ROW_NAME = re.compile(r"^\| \[?(\w+)\]?")
MACHINE_LINE = re.compile(r"^- machine `(\w+)`: ")
MACHINE_TAG = re.compile(r"machine `(\w+)`")


def declarations() -> dict[str, dict[str, Any]]:
    """Each benchmark script's row as it declares it (HEADLINE), by script name. Importing the scripts
    is how the table knows every benchmark, run or not (about 0.7 s for all of them)."""
    declared = {}
    for path in sorted(BENCH.glob("*.py")):
        if "\nHEADLINE = " not in path.read_text():
            continue  # this script, bare_app.py: not benchmarks
        spec = importlib.util.spec_from_file_location(f"bench_{path.stem}", path)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
        declared[path.stem] = module.HEADLINE.declared()
    return declared


def saved_results(folder: Path) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """The headline rows saved in `folder` by benchmark, and the benchmarks marked failed (the date)."""
    saved = {path.stem: orjson.loads(path.read_bytes())["headline"] for path in folder.glob("*.json")}
    failed = {path.stem: path.read_text().strip() for path in folder.glob("*.failed")}
    return saved, failed


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def headings(document: str) -> list[str]:
    """The document's headings in order, without their #s (code blocks skipped: `# comment` lines)."""
    found, fenced = [], False
    for line in document.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"#+ ", line):
            found.append(line.lstrip("#").strip())
    return found


def span(document: str) -> tuple[int, int] | None:
    """Where the block starts and ends: between the first lines that are the marks and nothing else
    (prose may quote them)."""
    start = re.search(f"^{re.escape(MARKS[0])}$", document, re.MULTILINE)
    end = re.search(f"^{re.escape(MARKS[1])}$", document[start.end() :], re.MULTILINE) if start else None
    return (start.end(), start.end() + end.start()) if start and end else None


def block(document: str) -> str:
    """What stands between the marks now ("" when the document has no marks yet)."""
    found = span(document)
    return document[found[0] : found[1]] if found else ""


def rewrite(document: str, new_block: str) -> str:
    """`document` with `new_block` between the marks, and everything else as it was."""
    found = span(document)
    if found is None:
        raise ValueError(f"the document has no {MARKS[0]} ... {MARKS[1]} block")
    return f"{document[: found[0]]}\n{new_block}\n{document[found[1] :]}"


def number(value: float) -> str:
    """Whole numbers from 100 up, four significant digits below (97.64 % against 97.62 %)."""
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.4g}"


def cell(text: str) -> str:
    return text.replace("|", "\\|")


def machine_line(info: dict[str, Any]) -> str:
    """The machine in one line: what makes a figure comparable with another's."""
    flags = [flag for flag in info.get("cpu_flags", []) if flag != "hypervisor"]
    virtual = ", virtual" if "hypervisor" in info.get("cpu_flags", []) else ""
    return (
        f"{info['cpus']} CPUs, {info['cpu_model']} ({' '.join(flags) or 'flags unknown'}{virtual}), "
        f"{info['memory']}, Linux {info['kernel']}, Python {info['python']}, "
        f"PostgreSQL {info.get('postgres', 'unknown')}, Valkey {info.get('valkey', 'unknown')}, "
        f"NATS {info.get('nats', 'unknown')}"
    )


def tag(line: str) -> str:
    return hashlib.sha1(line.encode()).hexdigest()[:4]


def side(text: str, figure: dict[str, Any] | None) -> str:
    return f"{text}: **{number(figure['value'])} {figure['unit']}**" if figure else text


def verdict(row: dict[str, Any]) -> str:
    """The goals, and how many of them the run met."""
    if not row["goal"]:
        return "none set"
    if not row.get("judged"):
        return f"{row['goal']}: not judged" if "judged" in row else row["goal"]
    if row["judged"] == 1:
        return f"{row['goal']}: {'met' if row['met'] else '**not met**'}"
    return f"{row['goal']}: {row['met']} of {row['judged']} met"


def find_section(section: str, document_headings: list[str]) -> int | None:
    """Where the first heading that starts with `section` is among the document's headings."""
    found = (index for index, text in enumerate(document_headings) if section and text.startswith(section))
    return next(found, None)


def link(name: str, section: str, document_headings: list[str]) -> str:
    index = find_section(section, document_headings)
    return name if index is None else f"[{name}](#{slug(document_headings[index])})"


def row_line(name: str, row: dict[str, Any], measured: str, document_headings: list[str]) -> str:
    """A row of the table: from a saved result (figures, ratio, verdict) or a declaration (texts)."""
    ratio = f"{row['ratio_label']} **{number(row['ratio'])}**" if row.get("ratio") is not None else "—"
    cells = (
        link(name, row["section"], document_headings),
        side(row["anchor"], row.get("a")),
        side(row["subject"], row.get("b")),
        ratio,
        verdict(row),
        measured,
    )
    return "| " + " | ".join(cell(text) for text in cells) + " |"


def previous(document: str) -> tuple[dict[str, str], dict[str, str]]:
    """The rows of the block `document` holds now by benchmark, and its machine lines by tag."""
    rows, machines = {}, {}
    for line in block(document).splitlines():
        if found := MACHINE_LINE.match(line):
            machines[found.group(1)] = line
        elif line.startswith("| ") and not line.startswith(HEADER[:12]) and (found := ROW_NAME.match(line)):
            rows[found.group(1)] = line
    return rows, machines


def kept(name: str, old: str, section: str, failed_on: str | None, document_headings: list[str]) -> str:
    """A row no run replaced, as it was: its link made again (headings change), "failed" if it did."""
    row = f"| {link(name, section, document_headings)} | {old.partition(' | ')[2]}"
    if failed_on is None:
        return row
    head, _, measured = row.rstrip(" |").rpartition(" | ")
    return f"{head} | **failed** {failed_on}; before: {measured} |"


def render(
    declared: dict[str, dict[str, Any]],
    saved: dict[str, dict[str, Any]],
    failed: dict[str, str],
    document: str,
) -> str:
    """The block: one row per declared benchmark, in the order of their sections in `document`, then
    the machines the rows name. A benchmark with no saved result keeps its row from the block in
    `document` (and the machine that row names), or is not run."""
    document_headings = headings(document)
    old_rows, old_machines = previous(document)

    def position(name: str) -> tuple[int, str]:
        index = find_section(declared[name]["section"], document_headings)
        return (len(document_headings) if index is None else index, name)

    rows, machines = [], {}
    for name in sorted(declared, key=position):
        row = saved.get(name)
        if row is not None:
            line = machine_line(row["machine"])
            machines[tag(line)] = f"- machine `{tag(line)}`: {line}"
            measured = f"{row['date'][:10]}, `{row['commit']}`, machine `{tag(line)}`"
            if name in failed:
                measured = f"**failed** {failed[name]}; figures of {measured}"
            rows.append(row_line(name, row, measured, document_headings))
        elif name in old_rows:
            section = declared[name]["section"]
            rows.append(kept(name, old_rows[name], section, failed.get(name), document_headings))
            for machine in MACHINE_TAG.findall(rows[-1]):
                machines.setdefault(machine, old_machines.get(machine, ""))
        else:
            measured = f"**failed** {failed[name]}" if name in failed else "**not run**"
            rows.append(row_line(name, declared[name], measured, document_headings))
    return "\n".join([HEADER, *rows, "", *filter(None, machines.values())])


def main(argv: list[str] | None = None) -> int:
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))  # the scripts import `harness` as a sibling, as this does
    from harness.report import RESULTS_ENV

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument(
        "--results",
        type=Path,
        default=Path(os.environ.get(RESULTS_ENV) or ROOT / ".sophia" / "bench"),
        help=f"the folder the benchmarks saved to (default: ${RESULTS_ENV} or .sophia/bench)",
    )
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks.md", help="the document")
    options = parser.parse_args(argv)
    declared = declarations()
    saved, failed = saved_results(options.results)
    document = options.doc.read_text()
    options.doc.write_text(rewrite(document, render(declared, saved, failed, document)))
    fresh = sorted(set(saved) & set(declared) - set(failed))
    print(f"{options.doc}: {len(fresh)} of {len(declared)} benchmarks from {options.results}")
    for name in sorted(set(failed) & set(declared)):
        print(f"  failed: {name} ({failed[name]})")
    return 1 if set(failed) & set(declared) else 0


if __name__ == "__main__":
    sys.exit(main())
