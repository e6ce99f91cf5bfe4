"""On a CPU without AVX-512 (QEMU's, emulated): PostgreSQL's vector work and the embedding model run.

The objdump guard (test_portability.py) reads the code; this runs it. QEMU's user-mode emulator
offers AVX2 but no AVX-512, whatever the host has, so a build that assumes AVX-512 dies here with
SIGILL as it did on users' machines. ONNX Runtime ships without symbols, so only running it shows
that it picks its kernels by the CPU.
"""

import json
import shutil
import subprocess
import sys
import textwrap

import asyncpg
import numpy as np
import pytest

from sophia.engines.postgres import EmbeddedPostgres

pytestmark = pytest.mark.e2e

EMULATOR = ["qemu-x86_64", "-cpu", "max"]
FEATURES = textwrap.dedent(
    """
    import json
    from numpy._core._multiarray_umath import __cpu_features__ as features
    print(json.dumps({name: features[name] for name in ("AVX2", "AVX512F")}))
    """
)
EMBED = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from sophia.ml.encoder import SentenceEncoder
    encoder = SentenceEncoder.create(Path(sys.argv[1]), threads=1, quantized=True)
    sys.stdout.buffer.write(encoder.encode(["Acme asked for a discount on the enterprise plan."]).tobytes())
    """
)
GATEWAY_NATIVE = textwrap.dedent(
    """
    import asyncio, jsonschema, jwt, markupsafe, rpds
    import aiohttp, aiohttp.web
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from sophia.mcp_gateway.server import create_app
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    signed = [jwt.encode({"sub": "a"}, rsa_key, "RS256"), jwt.encode({"sub": "b"}, ec_key, "ES256")]
    subjects = [jwt.decode(signed[0], rsa_key.public_key(), ["RS256"])["sub"],
                jwt.decode(signed[1], ec_key.public_key(), ["ES256"])["sub"]]
    sealed = AESGCM(bytes(32)).encrypt(bytes(12), b"x" * 65536, None)
    jsonschema.Draft202012Validator({"type": "object", "required": ["a"]}).validate({"a": 1})

    async def round_trip():  # aiohttp's C parser and writer, multidict, yarl: one request each way
        app = aiohttp.web.Application()
        app.router.add_get("/", lambda request: aiohttp.web.json_response({"q": request.query["q"]}))
        runner = aiohttp.web.AppRunner(app)
        await runner.setup()
        await aiohttp.web.TCPSite(runner, "127.0.0.1", 0).start()
        port = runner.addresses[0][1]
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/?q=yes") as got:
            answer = (await got.json())["q"]
        await runner.cleanup()
        return answer

    print(subjects, len(sealed), rpds.HashTrieMap({"a": 1}).insert("b", 2)["b"], markupsafe.escape("<b>"),
          asyncio.run(round_trip()))
    """
)
"""What the MCP gateway and the dashboard added that is native code: OpenSSL in `cryptography` (JWT
signatures; it carries AVX-512 paths chosen at run time), `rpds` (jsonschema's), `markupsafe`, and
aiohttp's HTTP parser and writer with `multidict` and `yarl` (the gateway's client to upstreams)."""


class EmulatedPostgres(EmbeddedPostgres):
    """The embedded server, its every process on the emulated CPU."""

    def _argv(self) -> list[str]:
        return [*EMULATOR, *super()._argv()]


@pytest.fixture(scope="module")
def emulator() -> list[str]:
    if shutil.which(EMULATOR[0]) is None:
        pytest.fail("qemu-x86_64 is not installed: run `make tools` (Debian package qemu-user)")
    return EMULATOR


def run_python(prefix: list[str], script: str, *args: str) -> bytes:
    return subprocess.run(
        [*prefix, sys.executable, "-c", script, *args], capture_output=True, check=True, timeout=300
    ).stdout


def test_the_emulated_cpu_has_avx2_and_no_avx512(emulator):
    assert json.loads(run_python(emulator, FEATURES)) == {"AVX2": True, "AVX512F": False}


async def test_postgresql_stores_indexes_and_searches_vectors_without_avx512(emulator, tmp_path):
    server = EmulatedPostgres(tmp_path, durable=False)
    url = await server.start()
    try:
        connection = await asyncpg.connect(url)
        try:
            await connection.execute("CREATE EXTENSION vector; CREATE EXTENSION pg_trgm")
            await connection.execute(
                "CREATE TABLE items (id uuid PRIMARY KEY DEFAULT uuidv7(), v vector(384))"
            )
            await connection.execute(  # the WHERE makes the subquery run again for each row
                "INSERT INTO items (v) SELECT (SELECT array_agg(random())::vector(384) "
                "FROM generate_series(1, 384) WHERE i > 0) FROM generate_series(1, 2000) AS i"
            )
            await connection.execute("CREATE INDEX ON items USING hnsw (v vector_cosine_ops)")
            nearest = await connection.fetch(
                "SELECT v <=> (SELECT v FROM items LIMIT 1) AS distance FROM items "
                "ORDER BY v <=> (SELECT v FROM items LIMIT 1) LIMIT 3"
            )
            assert len(nearest) == 3
            assert nearest[0]["distance"] == pytest.approx(0.0, abs=1e-6)
            assert await connection.fetchval("SELECT similarity('pricing', 'price')") > 0
        finally:
            await connection.close()
    finally:
        await server.stop()
    # Judged up to the shutdown: qemu-user at times aborts a process while the server stops
    # (seen once: signal 6 after "received fast shutdown request"), which says nothing of the CPU.
    log = (tmp_path / "logs" / "postgres.log").read_text()
    assert "terminated by signal" not in log.split("received fast shutdown request")[0]


def test_the_embedding_model_gives_the_same_vector_without_avx512(emulator, tmp_path):
    native = np.frombuffer(run_python([], EMBED, str(tmp_path)), dtype=np.float32)
    emulated = np.frombuffer(run_python(emulator, EMBED, str(tmp_path)), dtype=np.float32)
    assert native.shape == emulated.shape == (384,)
    assert float(native @ emulated) > 0.999  # other kernels, the same meaning


def test_the_gateways_native_dependencies_run_without_avx512(emulator):
    printed = run_python(emulator, GATEWAY_NATIVE).decode().strip()
    assert printed == "['a', 'b'] 65552 2 &lt;b&gt; yes"
