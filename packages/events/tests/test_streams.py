"""Streams as data against real JetStream: created, brought to their spec, and refusals passed on."""

from __future__ import annotations

from dataclasses import replace

import pytest
from nats.js.errors import APIError

from sophia.events.connection import NatsConnection
from sophia.events.streams import INSUFFICIENT_STORAGE, StreamSpec, ensure_streams


@pytest.fixture
async def js(own_streams):
    async with NatsConnection(own_streams.nats_url) as nats:
        yield await nats.jetstream()


def spec_named(own_streams, name: str) -> StreamSpec:
    return StreamSpec(own_streams.events_stream_prefix + name, partitions=2, max_bytes=1024 * 1024)


async def test_a_stream_whose_limits_changed_is_updated_and_an_unchanged_one_left_alone(js, own_streams):
    spec = spec_named(own_streams, "limits")
    assert await ensure_streams(js, [spec]) == [spec.name]
    assert await ensure_streams(js, [spec]) == []
    longer = replace(spec, max_age_s=3600.0, max_bytes=2 * 1024 * 1024)
    assert await ensure_streams(js, [longer]) == [spec.name]
    config = (await js.stream_info(spec.name)).config
    assert (config.max_age, config.max_bytes) == (3600.0, 2 * 1024 * 1024)


async def test_a_refusal_other_than_storage_reaches_the_caller_as_jetstreams_own_error(js, own_streams):
    replicated = replace(spec_named(own_streams, "replicated"), replicas=3)  # one server: no replicas
    with pytest.raises(APIError) as raised:
        await ensure_streams(js, [replicated])
    assert raised.value.err_code != INSUFFICIENT_STORAGE  # not turned into StreamStorageRefused
    assert "replicas > 1 not supported" in (raised.value.description or "")
    assert [info.config.name for info in await js.streams_info()].count(replicated.name) == 0
