"""`sophia` commands given what the review tests do not try: engine URLs and settings that do not
parse, stored data that is malformed, a stdout that cannot take the secret, arguments that conflict
or that the engines cannot store, services that are not what the URL promised, a second `up`.

The rule each test holds a command to: a non-zero exit (2 for a usage error) with one line saying
what is wrong and where, no traceback, nothing half done, no wait without a deadline; exit 0 only
when it did what it says. Against the session's real engines; in-process through typer where a
failure cannot hang the run, else in a process of its own with a deadline (those are in the load
tier, with the ones that build the encoder or start a stack).

Every test was written failing, on a defect this file found; all are fixed: settings checked
at start (engine URLs, pool sizes, finite timeouts of at most a day), a changed migration, a
malformed dead letter, dead letters that cannot go back named as such, `dlq` needing NATS alone,
`tail`'s bad positions, undecodable channels, non-WebSocket servers, 404s and services never
reached, `keys create` given two scopes, an invisible name or no output to print to, `env` quoted
for `eval`, `jobs submit` given a parameter twice or a key past its index, `serve` on a taken port,
`up` with a bad data directory, an unreachable configured engine or a stack already running there,
a label holding a NUL, the classifier's `-o` naming no regular file, and job parameters the job
would refuse (one rule, `sophia.workers.jobs.params_problem`, where it runs and before it is queued)."""

from __future__ import annotations

import asyncio
import csv
import os
import secrets
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse

import orjson
import pytest
from cli_results import assert_no_traceback, fetchval, invoke, said, train_classifier
from typer.testing import CliRunner

from sophia.engines.process import free_port

pytestmark = pytest.mark.load  # hundreds of edge cases: the fast tier keeps the 30 s it has

runner = CliRunner()
PASSWORD = "hunter2"


def sophia(
    *args: str, env: dict[str, str], timeout_s: float = 30, **options: object
) -> subprocess.CompletedProcess[str]:
    """`sophia ARGS` in a process of its own (os.environ with `env` over it), within `timeout_s`."""
    environment = os.environ | env
    return subprocess.run(
        [sys.executable, "-m", "sophia.cli.main", *args],
        env=environment,
        capture_output="stdout" not in options,
        stderr=subprocess.PIPE if "stdout" in options else None,
        text=True,
        timeout=timeout_s,
        **options,  # type: ignore[arg-type]
    )


# -- engine URLs and settings that do not parse ------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value", "shown"),
    [
        ("SOPHIA_DATABASE_URL", f"postgresql://someone:{PASSWORD}@127.0.0.1:99999/db", "127.0.0.1:99999"),
        ("SOPHIA_DATABASE_URL", f"postgresql://someone:{PASSWORD}@127.0.0.1:notaport/db", "notaport"),
        ("SOPHIA_DATABASE_URL", f"postgresql://someone:{PASSWORD}@[::1/db", "[::1"),
    ],
    ids=["port-past-65535", "port-not-a-number", "broken-ipv6"],
)
def test_a_database_url_that_does_not_parse_is_named_in_one_line(tmp_path, variable, value, shown):
    """`SOPHIA_DATABASE_URL=postgresql://u:p@127.0.0.1:99999/db sophia keys list`: OverflowError
    from the socket layer; `:notaport` and `[::1` a ValueError from asyncpg's DSN parser; neither is
    in `failures.run_on_database`'s POSTGRES_ERRORS nor `Database.open`'s ENGINE_ERRORS."""
    result = invoke(
        {variable: value, "SOPHIA_DATA_DIR": str(tmp_path), "SOPHIA_REDIS_URL": ""}, "keys", "list"
    )
    assert_no_traceback(result)
    assert result.exit_code == 1, said(result)
    assert variable in said(result) or shown in said(result)
    assert PASSWORD not in said(result)


@pytest.mark.parametrize(
    ("command", "variable", "value"),
    [
        (("views", "refresh"), "SOPHIA_REDIS_URL", "garbage"),
        (("views", "refresh"), "SOPHIA_REDIS_URL", f"redis://:{PASSWORD}@127.0.0.1:99999/0"),
        (("seed", "--records", "1"), "SOPHIA_REDIS_URL", f"redis://:{PASSWORD}@[::1/0"),
        (("dlq", "list"), "SOPHIA_NATS_URL", f"nats://someone:{PASSWORD}@[::1"),
    ],
    ids=["redis-no-scheme", "redis-port-past-65535", "redis-broken-ipv6", "nats-broken-ipv6"],
)
def test_a_redis_or_nats_url_that_does_not_parse_is_named_in_one_line(own, env, command, variable, value):
    """`SOPHIA_REDIS_URL=garbage sophia views refresh`: redis-py's ValueError ("Redis URL must
    specify one of the following schemes") escapes `caches.running_caches`; `SOPHIA_NATS_URL=nats://[::1`
    urllib's ValueError escapes `dlq._with_nats` (it catches NotFound and Unavailable only)."""
    result = invoke(env | {variable: value}, *command)
    assert_no_traceback(result)
    assert result.exit_code == 1, said(result)
    assert variable in said(result) or value.split("@")[-1] in said(result)
    assert PASSWORD not in said(result)


def test_a_pool_minimum_above_its_maximum_is_an_invalid_setting_not_a_traceback(tmp_path, settings):
    """asyncpg's `ValueError: min_size is greater than max_size` escapes: `Settings` takes each
    bound alone and no check relates them."""
    env = {
        "SOPHIA_DATABASE_URL": settings.database_url,
        "SOPHIA_DATA_DIR": str(tmp_path),
        "SOPHIA_DB_POOL_MIN_SIZE": "5",
        "SOPHIA_DB_POOL_MAX_SIZE": "2",
    }
    result = invoke(env, "keys", "list")
    assert_no_traceback(result)
    assert result.exit_code == 1, said(result)
    assert "SOPHIA_DB_POOL_MIN_SIZE" in said(result)


# -- the database's own state ------------------------------------------------------------------


def test_migrate_on_a_database_whose_applied_migration_changed_says_which_in_one_line(
    migrated_database, tmp_path
):
    """`migrations.MigrationMismatch` is a RuntimeError: neither a SophiaError nor a PostgreSQL
    error, so `failures.run_on_database` lets it escape as a traceback."""
    url = asyncio.run(migrated_database())
    fetchval(url, "UPDATE sophia_core.schema_migrations SET checksum = 'tampered' WHERE version = 2")
    result = invoke({"SOPHIA_DATABASE_URL": url, "SOPHIA_DATA_DIR": str(tmp_path)}, "migrate")
    assert_no_traceback(result)
    assert result.exit_code == 1, said(result)
    assert "migration 2 (api_keys) changed after it was applied" in said(result)


# -- dead letters --------------------------------------------------------------------------------


def file_raw_dead_letter(settings, headers: dict[str, str] | None) -> int:
    """A message on the dead-letter stream as something other than a stream processor put it there
    (by hand, an older release): its sequence."""
    from sophia.events.connection import NatsConnection
    from sophia.events.dead_letter import dead_letter_spec
    from sophia.events.streams import ensure_streams

    spec = dead_letter_spec(settings)

    async def run() -> int:
        async with NatsConnection(settings.nats_url) as nats:
            js = await nats.jetstream()
            await ensure_streams(js, [spec])
            ack = await js.publish(f"{spec.name}.byhand", b"{}", stream=spec.name, headers=headers)
            return ack.seq

    return asyncio.run(run())


@pytest.mark.parametrize("command", ["list", "show"])
def test_dlq_a_dead_letter_with_a_malformed_header_is_named_not_a_traceback(own, env, command):
    """`Sophia-Dead-Letter-Sequence: x`: `dead_letter._dead_letter` calls int() on it, and one
    such letter makes `sophia dlq list` fail outright with a ValueError traceback."""
    sequence = file_raw_dead_letter(own, {"Sophia-Dead-Letter-Sequence": "x"})
    result = invoke(env, "dlq", *([command, str(sequence)] if command == "show" else [command]))
    assert_no_traceback(result)
    assert str(sequence) in said(result)


@pytest.mark.parametrize(
    ("headers", "named"),
    [
        (None, "subject"),
        (
            {"Sophia-Dead-Letter-Stream": "gone-stream", "Sophia-Dead-Letter-Subject": "gone-stream.x"},
            "gone-stream",
        ),
    ],
    ids=["no-origin", "origin-stream-gone"],
)
def test_dlq_replay_of_a_letter_it_cannot_put_back_says_why_not_that_nats_failed(own, env, headers, named):
    """A letter with no origin is published to subject "" (BadSubjectError), one whose stream is
    gone gets no answer (NoStreamResponseError); both read "NATS failed: ...", which sends the
    operator to a NATS that is fine."""
    sequence = file_raw_dead_letter(own, headers)
    result = invoke(env, "dlq", "replay", str(sequence))
    assert_no_traceback(result)
    assert result.exit_code == 1, said(result)
    assert "NATS failed" not in said(result)
    assert named in said(result)
    assert invoke(env, "dlq", "show", str(sequence)).exit_code == 0  # still there to try again


def test_dlq_needs_nats_only_not_a_database(own, tmp_path):
    """`dlq._with_nats` starts with `resolve_settings()`, which refuses without a database; the
    dead letters live in NATS alone."""
    env = {
        "SOPHIA_DATABASE_URL": "",
        "SOPHIA_NATS_URL": own.nats_url,
        "SOPHIA_DATA_DIR": str(tmp_path),
        "SOPHIA_EVENTS_STREAM_PREFIX": own.events_stream_prefix,
    }
    result = invoke(env, "dlq", "list")
    assert result.exit_code == 0, said(result)
    assert "No dead letters." in result.output


# -- tail: arguments -------------------------------------------------------------------------------


@pytest.mark.parametrize("since", ["e:\u00b2", "e:" + "1" * 5000], ids=["superscript-digit", "5000-digits"])
def test_tail_since_that_is_not_a_position_is_a_usage_error(tmp_path, since):
    """`tail.parse_since` checks `seq.isdigit()`, which "²" passes and int() then refuses; 5,000
    digits pass too and pass int()'s limit: a ValueError traceback either way."""
    result = invoke(
        {"SOPHIA_DATA_DIR": str(tmp_path)},
        "tail", "records", "--url", "ws://127.0.0.1:9/ws", "--key", "k", "--since", since,
    )  # fmt: skip
    assert_no_traceback(result)
    assert result.exit_code == 2, said(result)
    assert "--since" in said(result)


# -- keys ----------------------------------------------------------------------------------------


def active_keys_named(database_url: str, name: str) -> int:
    query = "SELECT count(*) FROM sophia_core.api_keys WHERE name = $1 AND revoked_at IS NULL"
    return fetchval(database_url, query, name)  # type: ignore[return-value]


def test_keys_create_with_two_scopes_is_refused_not_an_admin_key(own, env):
    """`--scope read --scope admin`: click keeps the last, and an admin key is made and printed
    with exit 0 for a command line that also said read."""
    name = f"two-scopes-{uuid.uuid4().hex[:8]}"
    result = invoke(env, "keys", "create", "--scope", "read", "--scope", "admin", "--name", name)
    assert result.exit_code == 2, said(result)
    assert "--scope" in said(result)
    assert active_keys_named(env["SOPHIA_DATABASE_URL"], name) == 0


@pytest.mark.parametrize(
    "name", ["\u200b", "ops\u2028bot", "\u00ad"], ids=["zero-width", "line-sep", "soft-hyphen"]
)
def test_keys_create_refuses_a_name_that_is_not_printable(own, env, name):
    """README: "N: up to 200 printable characters"; `keys._check_name` refuses categories Cc and
    Cs only, so a name that `str.isprintable()` refuses (format characters, line separators)
    is stored, and one of zero-width spaces shows as an empty name in `keys list`."""
    assert not name.isprintable()
    before = active_keys_named(env["SOPHIA_DATABASE_URL"], name)
    result = invoke(env, "keys", "create", "--scope", "read", "--name", name)
    assert result.exit_code == 2, said(result)
    assert "--name" in said(result)
    assert active_keys_named(env["SOPHIA_DATABASE_URL"], name) == before


# -- env -----------------------------------------------------------------------------------------


def test_env_prints_what_a_shell_can_eval_without_running_anything(tmp_path):
    """`sophia env` prints the values unquoted, for `eval "$(sophia env)"`: a value with a space or
    `$(...)` in the endpoints file runs as a command in the user's shell."""
    api = f"http://127.0.0.1:1 $(touch {tmp_path}/pwned)"
    (tmp_path / "endpoints.json").write_bytes(orjson.dumps({"api": api, "api_key": "sk_x"}))
    result = invoke({"SOPHIA_DATA_DIR": str(tmp_path)}, "env")
    if result.exit_code != 0:  # refusing the file is as good
        assert_no_traceback(result)
        return
    evaluated = subprocess.run(
        ["bash", "-c", f'eval {shlex.quote(result.output)}; printf %s "$SOPHIA_API"'],
        cwd=tmp_path, capture_output=True, text=True, timeout=10, env={"PATH": os.environ["PATH"]},
    )  # fmt: skip
    assert not (tmp_path / "pwned").exists(), result.output
    assert evaluated.stdout == api


# -- jobs ----------------------------------------------------------------------------------------


def queued_jobs(database_url: str) -> int:
    return fetchval(database_url, "SELECT count(*) FROM sophia_core.jobs")  # type: ignore[return-value]


@pytest.mark.parametrize(
    "params",
    [("batch_size=0",), ("batch_size=-3",), ("batch_size=lots",), ("kind=5",)],
    ids=["batch-zero", "batch-negative", "batch-text", "kind-number"],
)
def test_jobs_submit_refuses_params_the_job_is_certain_to_fail_on(own, env, params):
    """`reprocess_records` fails every attempt on these ("batch_size must be a positive integer",
    "source_system and kind must be strings"), yet `sophia jobs submit` queues it and says
    "Submitted job ..." with exit 0: the error shows only later, in `jobs status`."""
    before = queued_jobs(own.database_url)
    arguments = [part for param in params for part in ("--param", param)]
    result = invoke(env, "jobs", "submit", "reprocess_records", *arguments)
    assert result.exit_code == 2, said(result)
    assert params[0].split("=")[0] in said(result)
    assert queued_jobs(own.database_url) == before


def test_jobs_submit_refuses_one_param_given_twice(own, env):
    """`--param kind=deal --param kind=call`: `dict(...)` keeps the last, silently."""
    before = queued_jobs(own.database_url)
    result = invoke(
        env, "jobs", "submit", "reprocess_records", "--param", "kind=deal", "--param", "kind=call"
    )
    assert result.exit_code == 2, said(result)
    assert "kind" in said(result)
    assert queued_jobs(own.database_url) == before


def test_jobs_submit_with_a_key_too_long_to_index_is_a_usage_error_naming_it(own, env):
    """A 12,000-character `--key` reaches PostgreSQL and comes back as "PostgreSQL refused: index
    row requires 12016 bytes, maximum size is 8191 (database ...)", exit 1: nothing names --key
    or says how long a key may be."""
    before = queued_jobs(own.database_url)
    result = invoke(env, "jobs", "submit", "refresh_active_deals", "--key", secrets.token_urlsafe(9000))
    assert result.exit_code == 2, said(result)
    assert "--key" in said(result)
    assert queued_jobs(own.database_url) == before


# -- in processes of their own: stdout, hangs, servers -----------------------------------------


@pytest.mark.parametrize("stdout", ["full", "closed"])
def test_keys_create_whose_secret_cannot_be_printed_leaves_no_key(settings, tmp_path, stdout):
    """`sophia keys create --scope admin >/dev/full`: the key is committed, then `print(secret)`
    fails (OSError traceback, exit 1) and the secret is lost with the key still active.
    `... >&-` (stdout closed): print() writes nowhere, exit 0, the key active and never shown."""
    name = f"unprinted-{stdout}-{uuid.uuid4().hex[:8]}"
    env = {"SOPHIA_DATABASE_URL": settings.database_url, "SOPHIA_DATA_DIR": str(tmp_path)}
    arguments = ("keys", "create", "--scope", "admin", "--name", name)
    if stdout == "full":
        with Path("/dev/full").open("w") as full:
            done = sophia(*arguments, env=env, stdout=full)
    else:
        done = sophia(*arguments, env=env, stdout=subprocess.DEVNULL, preexec_fn=lambda: os.close(1))
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    assert active_keys_named(settings.database_url, name) == 0


def tail_within_a_minute(url: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`sophia tail records --url URL`, which must have ended within a minute."""
    try:
        return sophia(
            "tail",
            "records",
            "--url",
            url,
            "--key",
            "k",
            env={"SOPHIA_DATA_DIR": str(tmp_path)},
            timeout_s=60,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"sophia tail --url {url} was still running after 60 s")


def test_tail_a_service_that_never_answers_gives_up_within_a_deadline(tmp_path):
    """`sophia tail records --url ws://127.0.0.1:<nothing listening>/ws --key k` prints
    "connection lost (ConnectionRefusedError); reconnecting" forever: with no connection ever
    made there is nothing to resume, and no deadline."""
    url = f"ws://127.0.0.1:{free_port()}/ws"
    done = tail_within_a_minute(url, tmp_path)
    assert done.returncode != 0
    assert url in done.stderr or "127.0.0.1" in done.stderr


def test_tail_a_url_that_is_not_a_websocket_service_exits_naming_it(tmp_path):
    """`sophia tail records --url ws://127.0.0.1:<Redis port>/ws --key k`: websockets'
    InvalidMessage ("did not receive a valid HTTP response") is neither OSError, ConnectionClosed
    nor TimeoutError, and escapes `tail.tail` as a traceback."""
    redis_port = urlparse(os.environ["SOPHIA_REDIS_URL"]).port
    url = f"ws://127.0.0.1:{redis_port}/ws"
    done = tail_within_a_minute(url, tmp_path)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "InvalidMessage" not in done.stderr
    assert f"127.0.0.1:{redis_port}" in done.stderr


async def test_tail_a_wrong_path_on_the_service_exits_naming_it(own_streams, tmp_path):
    """`sophia tail records --url ws://<realtime service>/nope --key <key>`: the service answers 404
    and the tail prints "refused (404); retrying" forever; a path that is not there will not be."""
    from sophia.realtime.service import RealtimeService

    settings = own_streams.model_copy(update={"realtime_port": 0})
    async with RealtimeService(settings) as service:
        url = f"ws://127.0.0.1:{service.port}/nope"
        try:
            done = await asyncio.to_thread(
                sophia, "tail", "records", "--url", url, "--key", "k",
                env={"SOPHIA_DATA_DIR": str(tmp_path)}, timeout_s=30,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            pytest.fail(f"sophia tail --url {url} was still retrying its 404 after 30 s")
    assert done.returncode != 0
    assert "404" in done.stderr


async def test_tail_a_channel_with_undecodable_bytes_is_a_usage_error(own_streams, api_keys, tmp_path):
    """`sophia tail $'records\\xff' --url ws://<realtime service>/ws --key <key>`: the channel (or
    `--since`'s epoch) holds a lone surrogate, `orjson.dumps` of the subscribe request raises
    TypeError ("str is not valid UTF-8: surrogates not allowed") after connecting: a traceback."""
    from sophia.realtime.service import RealtimeService

    settings = own_streams.model_copy(update={"realtime_port": 0})
    async with RealtimeService(settings) as service:
        url = f"ws://127.0.0.1:{service.port}/ws"
        results = []
        for arguments in (("records\udcff",), ("records", "--since", "ep\udcff:1")):
            try:
                results.append(
                    await asyncio.to_thread(
                        sophia,
                        "tail",
                        *arguments,
                        "--url",
                        url,
                        "--key",
                        api_keys["read"],
                        env={"SOPHIA_DATA_DIR": str(tmp_path)},
                        timeout_s=60,
                    )
                )
            except subprocess.TimeoutExpired:
                pytest.fail(f"sophia tail {arguments} did not exit within 60 s")
    for done in results:
        assert done.returncode == 2, done.stderr[-2000:]
        assert "Traceback" not in done.stderr
        assert "surrogates" not in done.stderr


def test_an_infinite_engine_timeout_is_an_invalid_setting_not_a_hang(tmp_path):
    """`SOPHIA_ENGINE_TIMEOUT_S=inf SOPHIA_NATS_URL=nats://127.0.0.1:1 sophia dlq list` waits for
    ever: the timeouts are `gt=0` with no upper bound, so `inf` (and 1e308) pass validation."""
    env = {
        "SOPHIA_DATA_DIR": str(tmp_path),
        "SOPHIA_DATABASE_URL": "postgresql://x@127.0.0.1:1/x",
        "SOPHIA_NATS_URL": f"nats://127.0.0.1:{free_port()}",
        "SOPHIA_ENGINE_TIMEOUT_S": "inf",
    }
    try:
        done = sophia("dlq", "list", env=env, timeout_s=20)
    except subprocess.TimeoutExpired:
        pytest.fail("sophia dlq list with SOPHIA_ENGINE_TIMEOUT_S=inf and NATS unreachable hung past 20 s")
    assert done.returncode == 1
    assert "SOPHIA_ENGINE_TIMEOUT_S" in done.stderr or "NATS" in done.stderr


def test_serve_on_a_port_in_use_says_so_in_a_line(settings, tmp_path):
    """`SOPHIA_API_PORT=<busy> sophia serve`: granian's RuntimeError "Address already in use" as a
    74-line Python and Rust traceback."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        env = {
            "SOPHIA_DATABASE_URL": settings.database_url,
            "SOPHIA_DATA_DIR": str(tmp_path),
            "SOPHIA_API_HOST": "127.0.0.1",
            "SOPHIA_API_PORT": str(port),
        }
        try:
            done = sophia("serve", env=env, timeout_s=60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"sophia serve on busy port {port} did not exit within 60 s")
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "Traceback" not in output, output[-3000:]
    assert str(port) in output


# -- up ------------------------------------------------------------------------------------------


def up_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOPHIA_")}
    return env | {"SOPHIA_DATA_DIR": str(data_dir), "SOPHIA_API_PORT": "0", "SOPHIA_SEED_RECORDS": "0"}


def test_up_with_a_data_dir_that_is_a_file_says_so_in_a_line(tmp_path):
    """`SOPHIA_DATA_DIR=<a file> sophia up`: NotADirectoryError traceback from the embedded
    PostgreSQL's start (`main.up` catches StreamStorageRefused alone)."""
    afile = tmp_path / "afile"
    afile.write_text("x")
    done = subprocess.run(
        [sys.executable, "-m", "sophia.cli.main", "up"],
        env=up_env(afile), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    assert str(afile) in done.stderr


def test_up_with_its_configured_postgres_unreachable_says_so_in_a_line(settings, tmp_path):
    """`SOPHIA_DATABASE_URL=postgresql://u:p@127.0.0.1:1/x sophia up`: after its five tries, the
    `Unavailable` escapes `main.up` as a 300-line traceback."""
    env = up_env(tmp_path) | {
        "SOPHIA_DATABASE_URL": f"postgresql://someone:{PASSWORD}@127.0.0.1:1/nowhere",
        "SOPHIA_REDIS_URL": settings.redis_url,
        "SOPHIA_NATS_URL": settings.nats_url,
    }
    done = subprocess.run(
        [sys.executable, "-m", "sophia.cli.main", "up"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "PostgreSQL is unreachable" in done.stderr
    assert "postgresql://someone:***@127.0.0.1:1/nowhere" in " ".join(done.stderr.split())
    assert PASSWORD not in done.stdout + done.stderr


def test_a_second_up_on_a_running_stacks_data_dir_says_one_is_running():
    """`sophia up` twice on one data directory: the second starts a second Valkey and NATS on the
    first's files, then dies with `RuntimeError: postgres exited with 1; see .../postgres.log` (a
    120-line traceback); it should say a stack is already running there."""
    # Not tmp_path: its parents are private to root, and the embedded PostgreSQL runs as another user.
    data_dir = Path(tempfile.mkdtemp(prefix="sophia-up-twice-"))
    data_dir.chmod(0o755)
    with (data_dir / "up.log").open("wb") as log:
        first = subprocess.Popen(
            [sys.executable, "-m", "sophia.cli.main", "up"], env=up_env(data_dir), stdout=log, stderr=log
        )
    try:
        deadline = time.monotonic() + 120
        while not (data_dir / "endpoints.json").exists():
            assert first.poll() is None, (data_dir / "up.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "the first sophia up wrote no endpoints.json in 120 s"
            time.sleep(0.1)
        second = subprocess.run(
            [sys.executable, "-m", "sophia.cli.main", "up"],
            env=up_env(data_dir), capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert first.poll() is None  # the first one still runs
    finally:
        if first.poll() is None:
            first.send_signal(signal.SIGINT)
            try:
                first.wait(timeout=60)
            except subprocess.TimeoutExpired:
                first.kill()
                first.wait(timeout=10)
        shutil.rmtree(data_dir, ignore_errors=True)
    assert second.returncode != 0
    assert "Traceback" not in second.stderr, second.stderr[-2000:]
    assert str(data_dir) in " ".join(second.stderr.split())


# -- ml train-classifier -------------------------------------------------------------------------


def write_rows(path: Path, rows: list[tuple[str, str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["text", "labels"])
        writer.writerows(rows)
    return path


def test_train_classifier_refuses_a_label_name_postgresql_cannot_store(tmp_path, ml_data_dir):
    """A label "pri\\0cing" trains and is written (exit 0); served, every prediction naming it is
    JSON with \\u0000, which PostgreSQL's jsonb refuses ("unsupported Unicode escape sequence")."""
    rows = [(f"Quote {i} came in over budget", "pri\x00cing") for i in range(6)]
    rows += [(f"Can we meet on day {i}?", "scheduling") for i in range(6)]
    dataset = write_rows(tmp_path / "nul_label.csv", rows)
    head = tmp_path / "h.npz"
    result = train_classifier(ml_data_dir, str(dataset), "--holdout", "0", "-o", str(head))
    assert result.exit_code == 2, result.output
    assert "line" in result.output
    assert not head.exists()


def test_train_classifier_that_fails_leaves_no_directory_it_made_for_the_head(tmp_path, ml_data_dir):
    """`ml._check_writable` makes `-o`'s parent directories before the training, which can still
    refuse the data ("every label needs at least 4 train rows"): they stay behind, empty."""
    dataset = write_rows(tmp_path / "no_labels.csv", [(f"text {i}", "") for i in range(10)])
    made = tmp_path / "new"
    result = train_classifier(ml_data_dir, str(dataset), "--holdout", "0", "-o", str(made / "sub" / "h.npz"))
    assert result.exit_code == 2, result.output
    assert "every label needs at least 4 train rows" in result.output
    assert not made.exists()


def test_train_classifier_does_not_replace_an_output_that_is_not_a_regular_file(tmp_path, ml_data_dir):
    """`sophia ml train-classifier FILE -o /dev/null` (as root, as in a container): `_check_writable`
    refuses a directory only, and `heads.save` renames its zip over the path, so /dev/null itself
    becomes a 3 KB regular file, with exit 0. Shown here on a FIFO of the test's own."""
    rows = [(f"Quote {i} came in over budget", "pricing") for i in range(6)]
    rows += [(f"Can we meet on day {i}?", "scheduling") for i in range(6)]
    dataset = write_rows(tmp_path / "ok.csv", rows)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    result = train_classifier(ml_data_dir, str(dataset), "--holdout", "0", "-o", str(fifo))
    assert stat.S_ISFIFO(fifo.lstat().st_mode), "the FIFO was replaced by a regular file"
    assert result.exit_code == 2, result.output
    assert str(fifo) in result.output
