"""`sophia dlq list|show|replay` against the test session's JetStream (in-process through typer)."""

import asyncio

import pytest
from typer.testing import CliRunner

from sophia.cli import dlq
from sophia.cli.main import app
from sophia.core.events import Envelope
from sophia.events.codec import encode
from sophia.events.connection import NatsConnection
from sophia.events.dead_letter import dead_letter_spec, list_dead_letters
from sophia.events.streams import ensure_streams, stream_specs
from sophia.workers.processor import ConsumerSpec, StreamProcessor

runner = CliRunner()


@pytest.fixture
def own(own_streams, monkeypatch):
    """Streams of this test's own, and a console wide enough for whole ids."""
    monkeypatch.setattr(dlq.console, "width", 200)
    return own_streams


def invoke(env, *args):
    return runner.invoke(app, ["dlq", *args], env=env)


def file_dead_letters(settings, count: int) -> list[Envelope]:
    """`count` events through a processor whose sink always fails: each ends up a dead letter."""
    events = [
        Envelope.new("user.event", f"u-{n}", {"name": "deal.viewed"}, source="api") for n in range(count)
    ]
    spec = stream_specs(settings)["user-events"]
    published = [(spec.subject(event.key, event.type), encode(event), None) for event in events]
    run_into_dead_letters(settings, published)
    return events


def run_into_dead_letters(settings, messages: list[tuple[str, bytes, dict[str, str] | None]]) -> None:
    """Publish `(subject, data, headers)` to the user-events stream and run a processor whose sink
    always fails until each message is a dead letter."""
    spec, dead_letter = stream_specs(settings)["user-events"], dead_letter_spec(settings)

    async def broken(batch: list[Envelope]) -> None:
        raise ValueError("broken sink")

    async def run() -> None:
        async with NatsConnection(settings.nats_url) as nats:
            js = await nats.jetstream()
            await ensure_streams(js, [spec])
            for subject, data, headers in messages:
                await js.publish(subject, data, stream=spec.name, headers=headers)
            consumer = ConsumerSpec("dlqtest", spec.name, max_deliver=1, batch_wait_s=0.01, idle_wait_s=0.02)
            stop = asyncio.Event()
            running = asyncio.create_task(
                StreamProcessor(nats, consumer, broken, dead_letter_stream=dead_letter).run(stop)
            )
            async with asyncio.timeout(5):
                while len(await list_dead_letters(nats, dead_letter.name)) < len(messages):
                    await asyncio.sleep(0.01)
            stop.set()
            await running

    asyncio.run(run())


def stream_messages(settings) -> int:
    async def count() -> int:
        async with NatsConnection(settings.nats_url) as nats:
            js = await nats.jetstream()
            return (await js.stream_info(stream_specs(settings)["user-events"].name)).state.messages

    return asyncio.run(count())


def test_dlq_list_shows_each_dead_letter_with_its_origin_and_error(own, env):
    file_dead_letters(own, 2)
    listed = invoke(env, "list")
    assert listed.exit_code == 0, listed.output
    assert listed.output.count("dlqtest") == 2
    assert "ValueError: broken sink" in listed.output
    assert f"{own.events_stream_prefix}user-events." in listed.output
    limited = invoke(env, "list", "--limit", "1")
    assert limited.output.count("dlqtest") == 1


def test_dlq_list_without_any_dead_letter_says_so(env):
    listed = invoke(env, "list")
    assert listed.exit_code == 0, listed.output
    assert "No dead letters." in listed.output


def test_dlq_show_prints_the_origin_the_error_and_the_event(own, env):
    [event] = file_dead_letters(own, 1)
    shown = invoke(env, "show", "1")
    assert shown.exit_code == 0, shown.output
    assert "consumer:   dlqtest" in shown.output
    assert "deliveries: 1" in shown.output
    assert "ValueError: broken sink" in shown.output
    assert stream_specs(own)["user-events"].subject(event.key, event.type) in shown.output
    assert f'"id": "{event.id}"' in shown.output


def test_dlq_show_prints_the_originals_own_headers_and_bytes_that_are_no_json(own, env):
    subject = stream_specs(own)["user-events"].subject("u-1", "user.event")
    run_into_dead_letters(own, [(subject, b"\xffnot json", {"Trace-Id": "trace-7"})])
    shown = invoke(env, "show", "1")
    assert shown.exit_code == 0, shown.output
    assert "header:     Trace-Id: trace-7" in shown.output
    assert "b'\\xffnot json'" in shown.output  # as Python writes bytes, not a traceback
    assert "deliveries: 1" in shown.output


def test_dlq_show_prints_each_event_of_a_message_that_carries_several(own, env):
    events = [Envelope.new("user.event", "u-1", {"name": f"step-{n}"}, source="api") for n in range(3)]
    subject = stream_specs(own)["user-events"].subject("u-1", "user.event")
    run_into_dead_letters(own, [(subject, b"\n".join(encode(event) for event in events), None)])
    shown = invoke(env, "show", "1")
    assert shown.exit_code == 0, shown.output
    assert "events:     3" in shown.output
    positions = [shown.output.index(f'"id": "{event.id}"') for event in events]
    assert positions == sorted(positions)  # each pretty-printed, in order


def test_dlq_replay_puts_the_event_back_and_deletes_the_letter(own, env):
    file_dead_letters(own, 2)
    before = stream_messages(own)
    replayed = invoke(env, "replay", "1")
    assert replayed.exit_code == 0, replayed.output
    assert "Replayed dead letter 1" in replayed.output
    assert stream_messages(own) == before + 1
    listed = invoke(env, "list")
    assert listed.output.count("dlqtest") == 1
    again = invoke(env, "replay", "1")
    assert again.exit_code == 1
    assert "No dead letter 1" in again.output


def test_dlq_show_and_replay_of_an_unknown_sequence_exit_1(own, env):
    file_dead_letters(own, 1)
    for command in ("show", "replay"):
        result = invoke(env, command, "99")
        assert result.exit_code == 1
        assert "No dead letter 99" in result.output
    assert invoke(env, "list").output.count("dlqtest") == 1


def test_dlq_with_nats_unreachable_exits_1_with_a_line_not_a_traceback(env):
    unreachable = env | {"SOPHIA_NATS_URL": "nats://127.0.0.1:1", "SOPHIA_ENGINE_TIMEOUT_S": "0.1"}
    result = invoke(unreachable, "list")
    assert result.exit_code == 1
    assert "NATS is unreachable" in result.output
    assert "Traceback" not in result.output


def test_dlq_without_nats_configured_says_how_to_get_one(env):
    result = invoke(env | {"SOPHIA_NATS_URL": ""}, "list")
    assert result.exit_code == 1
    assert "No NATS: set SOPHIA_NATS_URL" in result.output
