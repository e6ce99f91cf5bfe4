"""Every `sophia` command, given hostile arguments, settings or files, or an engine that is down or
refuses: a non-zero exit (2 for a usage error) with one line saying what and where, never a
traceback, and nothing half done. Against the session's real engines, in-process through typer."""

import asyncio

import orjson
import pytest
from cli_results import assert_no_traceback, fetchval, invoke, said
from typer.testing import CliRunner

from sophia.core.events import Envelope
from sophia.events.codec import encode
from sophia.events.connection import NatsConnection
from sophia.events.dead_letter import dead_letter_spec, list_dead_letters
from sophia.events.streams import ensure_streams, stream_specs
from sophia.workers.processor import ConsumerSpec, StreamProcessor

runner = CliRunner()
UNREACHABLE_DATABASE = "postgresql://someone:hunter2@127.0.0.1:1/nowhere"


DATABASE_COMMANDS = [
    ("keys", "list"),
    ("keys", "create", "--scope", "read"),
    ("keys", "revoke", "0123abcd"),
    ("audit", "verify"),
    ("migrate",),
    ("seed", "--records", "1"),
    ("views", "refresh"),
    ("analytics", "rebuild"),
    ("jobs", "status", "3fa85f64-5717-4562-b3fc-2c963f66afa6"),
]


@pytest.mark.parametrize("command", DATABASE_COMMANDS, ids=" ".join)
def test_database_commands_with_postgres_unreachable_exit_1_naming_it_without_its_password(command, tmp_path):
    env = {
        "SOPHIA_DATABASE_URL": UNREACHABLE_DATABASE,
        "SOPHIA_REDIS_URL": "",
        "SOPHIA_DATA_DIR": str(tmp_path),
    }
    result = invoke(env, *command)
    assert result.exit_code == 1, result.output
    assert_no_traceback(result)
    assert "PostgreSQL is unreachable" in result.output
    assert "postgresql://someone:***@127.0.0.1:1/nowhere" in result.output
    assert "hunter2" not in result.output


@pytest.mark.parametrize(
    "command",
    [("keys", "list"), ("audit", "verify"), ("jobs", "status", "3fa85f64-5717-4562-b3fc-2c963f66afa6")],
    ids=" ".join,
)
def test_database_commands_on_a_database_not_migrated_say_so(command, blank_database, tmp_path):
    url = asyncio.run(blank_database())
    result = invoke({"SOPHIA_DATABASE_URL": url, "SOPHIA_DATA_DIR": str(tmp_path)}, *command)
    assert result.exit_code == 1, result.output
    assert_no_traceback(result)
    assert "does not exist; is the database migrated? Run `sophia migrate` (database " in result.output


def test_keys_list_shows_a_name_with_brackets_as_it_was_typed(own, env):
    name = "[/x] ops [bold]bot[/bold] [type=admin]"
    created = invoke(env, "keys", "create", "--scope", "read", "--name", name)
    assert created.exit_code == 0, created.output
    listed = invoke(env, "keys", "list")
    assert listed.exit_code == 0, repr(listed.exception)
    assert name in listed.output


@pytest.mark.parametrize("name", ["nul\x00byte", "lone\udcffsurrogate", "bell\x07", "x" * 201, " "])
def test_keys_create_refuses_a_name_it_could_not_store_or_show_and_creates_nothing(own, env, name):
    before = fetchval(env["SOPHIA_DATABASE_URL"], "SELECT count(*) FROM sophia_core.api_keys")
    result = invoke(env, "keys", "create", "--scope", "read", "--name", name)
    assert result.exit_code == 2, result.output
    assert "--name" in said(result)
    assert fetchval(env["SOPHIA_DATABASE_URL"], "SELECT count(*) FROM sophia_core.api_keys") == before


@pytest.mark.parametrize("prefix", ["[/x]", "lone\udcff", "sk_0123abcd", "0123ABCG"])
def test_keys_revoke_refuses_what_is_not_a_prefix(own, env, prefix):
    result = invoke(env, "keys", "revoke", prefix)
    assert result.exit_code == 2, result.output
    assert "8 hex digits" in said(result)


@pytest.mark.parametrize("kind", ["no_such_kind", "", "a b", ">", "x.*", "lone\udcff"])
def test_jobs_submit_refuses_a_kind_no_worker_runs_and_queues_nothing(own, env, kind):
    before = fetchval(own.database_url, "SELECT count(*) FROM sophia_core.jobs")
    result = invoke(env, "jobs", "submit", kind)
    assert result.exit_code == 2, result.output
    assert "refresh_active_deals, announce_active_deals, reprocess_records, reembed_records" in said(result)
    assert fetchval(own.database_url, "SELECT count(*) FROM sophia_core.jobs") == before


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("--param", "a=\udcff"), "a: NUL or undecodable bytes"),
        (("--param", 'a=["\\u0000"]'), "a: NUL or undecodable bytes"),
        (("--param", "lone\udcff=1"), "NUL or undecodable bytes"),
        (("--param", "batch_size=99999999999999999999"), "batch_size: a number past 64 bits"),
        (("--param", "a=1e999"), "a: a number past 64 bits"),
        (("--param", "n=" + "1" * 5000), "n: a number past 64 bits"),  # past int()'s own limit
        (("--param", "deep=" + "[" * 100_000), "deep: nested too deeply"),
        (("--key", "lone\udcff"), "--key"),
        (("--key", "nul\x00"), "--key"),
    ],
)
def test_jobs_submit_refuses_params_and_keys_it_cannot_store_exactly_and_queues_nothing(
    own, env, arguments, message
):
    before = fetchval(own.database_url, "SELECT count(*) FROM sophia_core.jobs")
    result = invoke(env, "jobs", "submit", "reprocess_records", *arguments)
    assert result.exit_code == 2, result.output
    assert message in said(result)
    assert fetchval(own.database_url, "SELECT count(*) FROM sophia_core.jobs") == before


def test_jobs_with_brackets_in_a_key_or_an_id_print_them_as_text(own, env):
    key = "[/k] [bold]nightly[/bold]"
    assert invoke(env, "jobs", "submit", "refresh_active_deals", "--key", key).exit_code == 0
    again = invoke(env, "jobs", "submit", "refresh_active_deals", "--key", key)
    assert again.exit_code == 0, repr(again.exception)
    assert f"already has key {key!r}: queued." in again.output
    malformed = invoke(env, "jobs", "status", "[/x]")
    assert malformed.exit_code == 1, repr(malformed.exception)
    assert "Not a job id: '[/x]'." in malformed.output


def file_dead_letter_failing_with(settings, error: str) -> int:
    """One event through a processor whose sink fails with `error`: a dead letter that says so
    (its sequence)."""
    spec, dead_letter = stream_specs(settings)["user-events"], dead_letter_spec(settings)
    event = Envelope.new("user.event", "u-1", {"name": "deal.viewed"}, source="api")

    async def broken(batch: list[Envelope]) -> None:
        raise ValueError(error)

    async def run() -> int:
        async with NatsConnection(settings.nats_url) as nats:
            js = await nats.jetstream()
            await ensure_streams(js, [spec])
            await js.publish(spec.subject(event.key, event.type), encode(event), stream=spec.name)
            consumer = ConsumerSpec(
                "reviewtest", spec.name, max_deliver=1, batch_wait_s=0.01, idle_wait_s=0.02
            )
            stop = asyncio.Event()
            running = asyncio.create_task(
                StreamProcessor(nats, consumer, broken, dead_letter_stream=dead_letter).run(stop)
            )
            async with asyncio.timeout(5):
                while not await list_dead_letters(nats, dead_letter.name):
                    await asyncio.sleep(0.01)
            stop.set()
            await running
            return (await list_dead_letters(nats, dead_letter.name))[0].sequence

    return asyncio.run(run())


def test_dlq_list_and_show_print_an_error_with_brackets_as_text(own, env):
    error = "field [/data] is not [bold]valid[/bold] [type=missing]"
    sequence = file_dead_letter_failing_with(own, error)
    listed = invoke(env, "dlq", "list")
    assert listed.exit_code == 0, repr(listed.exception)
    assert f"ValueError: {error}" in listed.output
    shown = invoke(env, "dlq", "show", str(sequence))
    assert shown.exit_code == 0, repr(shown.exception)
    assert f"error:      ValueError: {error}" in shown.output


@pytest.mark.parametrize("command", ["show", "replay"])
def test_dlq_a_sequence_past_64_bits_is_a_usage_error_not_a_nats_failure(own, env, command):
    result = invoke(env, "dlq", command, str(2**64))
    assert result.exit_code == 2, result.output
    assert "18446744073709551615" in said(result)
    assert "NATS failed" not in result.output


@pytest.mark.parametrize(
    "command",
    [("seed", "--records", str(10**20)), ("up", "--seed-records", "-1")],
    ids=" ".join,
)
def test_seed_counts_out_of_range_are_usage_errors_before_any_engine_is_touched(command, tmp_path):
    env = {
        "SOPHIA_DATABASE_URL": UNREACHABLE_DATABASE,
        "SOPHIA_REDIS_URL": "redis://127.0.0.1:1/0",
        "SOPHIA_NATS_URL": "nats://127.0.0.1:1",
        "SOPHIA_DATA_DIR": str(tmp_path),
    }
    result = invoke(env, *command)
    assert result.exit_code == 2, result.output
    assert command[1] in said(result)


@pytest.mark.parametrize(
    ("written", "message"),
    [
        (b'"not an object"', "is not an object of texts"),
        (b'{"api": 5, "api_key": "sk_x", "database_url": "postgresql://x"}', "is not an object of texts"),
        (b'{"api": "http://127.0.0.1:1"}', "has no"),
    ],
)
@pytest.mark.parametrize(
    "command",
    [("env",), ("migrate",), ("keys", "list"), ("tail", "records"), ("loadtest", "mixed")],
    ids=" ".join,
)
def test_a_malformed_endpoints_file_is_named_not_a_traceback(tmp_path, written, message, command):
    (tmp_path / "endpoints.json").write_bytes(written)
    env = {"SOPHIA_DATA_DIR": str(tmp_path), "SOPHIA_DATABASE_URL": "", "SOPHIA_API": "", "SOPHIA_KEY": ""}
    result = invoke(env, *command)
    if command == ("tail", "records") and message == "has no":
        assert result.exit_code == 1  # a stack without a real-time service: nothing to tail
        assert "No real-time service" in said(result)
        return
    assert result.exit_code == 1, said(result)
    assert_no_traceback(result)
    assert f"{tmp_path / 'endpoints.json'} {message}" in said(result)


def test_a_malformed_setting_is_named_in_one_line_without_its_value(tmp_path):
    env = {"SOPHIA_DATA_DIR": str(tmp_path), "SOPHIA_ENGINE_TIMEOUT_S": "hunter2"}
    result = invoke(env, "keys", "list")
    assert result.exit_code == 1, said(result)
    assert_no_traceback(result)
    assert "Invalid settings: SOPHIA_ENGINE_TIMEOUT_S: Input should be a valid number" in said(result)
    assert "hunter2" not in said(result)


@pytest.mark.parametrize(
    ("arguments", "hint"),
    [
        (("--url", "http://127.0.0.1:1/ws", "--key", "k"), "--url"),
        (("--url", "ws://127.0.0.1:99999/ws", "--key", "k"), "--url"),
        (("--url", "ws://127.0.0.1:1/ws", "--key", "k\r\nX-Injected: 1", "--since", "bad"), "--key"),
    ],
)
def test_tail_refuses_a_url_or_key_it_cannot_use_before_connecting(tmp_path, arguments, hint):
    result = invoke({"SOPHIA_DATA_DIR": str(tmp_path)}, "tail", "records", *arguments)
    assert result.exit_code == 2, said(result)
    assert hint in said(result)


@pytest.mark.parametrize(
    "arguments",
    [
        ("--url", "http://127.0.0.1:99999"),
        ("--url", "http://127.0.0.1:1", "--duration", "0s"),
        ("--url", "http://127.0.0.1:1", "--duration", "soon"),
        ("--url", "http://127.0.0.1:1", "--warmup", "5s"),
        ("--url", "http://example.com"),
    ],
)
def test_loadtest_arguments_out_of_bounds_are_usage_errors_before_k6_starts(tmp_path, arguments):
    result = invoke({"SOPHIA_DATA_DIR": str(tmp_path)}, "loadtest", "mixed", "--key", "k", *arguments)
    assert result.exit_code == 2, said(result)
    assert "k6 exited" not in result.output
    assert not (tmp_path / "reports").exists()


def test_the_endpoints_file_a_stack_writes_still_reads(tmp_path):
    """The checks refuse malformed files only: `sophia up`'s own (texts; none missing) reads."""
    written = {
        "api": "http://127.0.0.1:1",
        "api_key": "sk_x",
        "database_url": "postgresql://x",
        "realtime": None,
    }
    (tmp_path / "endpoints.json").write_bytes(orjson.dumps(written))
    result = invoke({"SOPHIA_DATA_DIR": str(tmp_path)}, "env")
    assert result.exit_code == 0, said(result)
    assert result.output.strip() == "export SOPHIA_API=http://127.0.0.1:1 SOPHIA_KEY=sk_x"
