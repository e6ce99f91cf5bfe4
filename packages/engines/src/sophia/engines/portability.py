"""Native code the stack runs must run on any x86-64 CPU: no AVX-512 outside run-time dispatched code.

A wheel compiled for the build machine's CPU passes every test there and dies with SIGILL on a CPU
without the same extensions (docs/decisions/0001-engines.md). This module reads machine code with
binutils' `objdump` and names every function that holds an AVX-512 instruction, which is:

- any EVEX-encoded instruction: in 64-bit code its first opcode byte, after legacy prefixes, is 0x62
  (AVX-512 and its successors are the only users of that encoding);
- any opmask instruction (`kmovw`, `kandw`, ...), which is VEX-encoded but exists only with AVX-512.

Code that chooses such a function at run time after asking the CPU is allowed; PostgreSQL and
pgvector name those functions after the extension (`pg_popcount_avx512`,
`BitHammingDistanceAvx512Popcount`), so a function is taken as dispatched when its name says
`avx512`. A Go binary is judged by its build settings instead: `GOAMD64=v1` means the toolchain
emitted only baseline x86-64 code, and the standard library's AVX-512 paths (the runtime's register
save, hash/crc32, the GC's scan kernels) run only after a CPU check.
"""

from __future__ import annotations

import bisect
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

# Written for both Python's re and grep's POSIX ERE (no (?:...) here).
LEGACY_PREFIX = r"((66|67|f0|f2|f3|2e|36|3e|26|64|65) )*"
OPMASK = r"k(mov|and|andn|or|xor|xnor|not|ortest|test|shiftl|shiftr|unpck|add)[bwdq]{1,2}"
# One instruction line of `objdump -d`: "  4a0b1c:\t62 f1 7c 48 10 06 \tvmovups (%rsi),%zmm0".
INSTRUCTION = re.compile(
    rf"^ +[0-9a-f]+:\t(?:{LEGACY_PREFIX}62 [0-9a-f ]*\t(?!\(bad\))"
    rf"|[0-9a-f ]+\t(?={OPMASK} ))"
    r"(?P<instruction>[^\n]*)$",
    re.MULTILINE,
)
# The same, for grep -E ahead of Python: the listing of a server is 100 MB, its candidates 1 MB.
GREP_PATTERN = f"^[0-9a-f]+ <|^ +[0-9a-f]+:\t{LEGACY_PREFIX}62 |\t{OPMASK} "
FUNCTION = re.compile(r"^[0-9a-f]+ <(?P<name>[^>\n]+)>:$", re.MULTILINE)
DISPATCHED = re.compile(r"avx512", re.IGNORECASE)
GO_BUILD_SETTING = re.compile(rb"\tGOAMD64=(v[1-4])\n")
OBJDUMP_TIMEOUT_S = 120.0


@dataclass(frozen=True, slots=True)
class Finding:
    """One function that would raise SIGILL on a CPU without AVX-512."""

    path: Path
    function: str
    instruction: str

    def __str__(self) -> str:
        return f"{self.path}: {self.function} uses AVX-512 ({self.instruction.strip()})"


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} is not installed: run `make tools` (Debian package binutils)")
    return found


def disassemble(path: Path) -> str:
    """The function headers and AVX-512 candidate lines of `objdump -d path` (grep keeps it fast)."""
    with (
        tempfile.TemporaryFile() as errors,
        subprocess.Popen([tool("objdump"), "-d", str(path)], stdout=subprocess.PIPE, stderr=errors) as dump,
    ):
        lines = subprocess.run(
            ["grep", "-E", GREP_PATTERN],
            env={**os.environ, "LC_ALL": "C"},  # a UTF-8 locale makes grep 6x slower here
            stdin=dump.stdout,
            capture_output=True,
            text=True,
            check=False,
            timeout=OBJDUMP_TIMEOUT_S,
        )
        dump.communicate()  # closes its stdout, waits
        errors.seek(0)
        reason = errors.read().decode(errors="replace").strip()
    if dump.returncode != 0 or lines.returncode > 1:  # grep: 1 = no line matched
        raise RuntimeError(f"objdump could not read {path}: {reason or lines.stderr.strip()}")
    return lines.stdout


def avx512_functions(path: Path, listing: str) -> list[Finding]:
    """Every function of `listing` (objdump's) with an AVX-512 instruction, once, in address order."""
    starts: list[int] = []
    names: list[str] = []
    for match in FUNCTION.finditer(listing):
        starts.append(match.start())
        names.append(match["name"])
    findings: dict[str, Finding] = {}
    for match in INSTRUCTION.finditer(listing):
        index = bisect.bisect_right(starts, match.start()) - 1
        name = names[index] if index >= 0 else "(before any symbol)"
        if name not in findings:
            findings[name] = Finding(path, name, match["instruction"])
    return list(findings.values())


def go_amd64_level(binary: bytes) -> str | None:
    """The GOAMD64 level a Go binary was built for ("unrecorded" if it says none), None if not Go's."""
    if b".go.buildinfo" not in binary:
        return None
    found = GO_BUILD_SETTING.search(binary)
    return found[1].decode() if found else "unrecorded"


def check(path: Path) -> list[Finding]:
    """What in `path` would fail on a CPU without AVX-512 (empty when it runs on any x86-64)."""
    level = go_amd64_level(path.read_bytes())
    if level is not None:
        return [] if level == "v1" else [Finding(path, "(whole binary)", f"built with GOAMD64={level}")]
    return [
        finding
        for finding in avx512_functions(path, disassemble(path))
        if not DISPATCHED.search(finding.function)
    ]


def stack_binaries() -> list[Path]:
    """The native programs the embedded stack runs: PostgreSQL's server and every library it may
    load (pgvector, pg_trgm, the rest of contrib), valkey-server and nats-server."""
    from sophia.engines import nats, postgres, valkey

    install = postgres.binaries().parent
    return [
        install / "bin" / "postgres",
        *sorted((install / "lib").glob("*.so")),
        valkey.binary(),
        nats.binary(),
    ]


def main(argv: list[str]) -> int:
    """`python -m sophia.engines.portability [PATH ...]`: check PATHs (default: the stack's binaries)."""
    paths = [Path(arg) for arg in argv] or stack_binaries()
    findings = [finding for path in paths for finding in check(path)]
    for finding in findings:
        print(finding)
    print(f"{len(paths)} files checked, {len(findings)} functions need AVX-512 without a CPU check")
    return 1 if findings else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
