"""A local 3-server NATS cluster: replicated (R3) streams, and a server that crashes and returns."""

import asyncio

import nats
import pytest

from sophia.engines.nats_cluster import EmbeddedNatsCluster
from sophia.events.streams import StreamSpec, ensure_streams


async def wait_for(condition, timeout_s: float = 20.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not await condition():
            await asyncio.sleep(0.05)


@pytest.mark.chaos
async def test_three_servers_form_one_cluster_that_keeps_an_r3_stream_through_a_crash(tmp_path):
    cluster = EmbeddedNatsCluster(tmp_path, size=3)
    urls = await cluster.start()
    client = None
    try:
        assert len(set(urls)) == 3
        client = await nats.connect(servers=urls, reconnect_time_wait=0.2)
        js = client.jetstream(timeout=2.0)
        spec = StreamSpec("cluster-test", partitions=2, replicas=3)

        assert await ensure_streams(js, [spec]) == ["cluster-test"]
        info = await js.stream_info(spec.name)
        names = {node.name for node in cluster.nodes}
        assert info.config.num_replicas == 3
        assert info.cluster.leader in names
        assert {peer.name for peer in info.cluster.replicas} == names - {info.cluster.leader}

        crashed = [node.name for node in cluster.nodes].index(info.cluster.leader)
        await cluster.stop_node(crashed, kill=True)

        async def new_leader() -> bool:
            try:
                state = await js.stream_info(spec.name)
            except (nats.errors.Error, TimeoutError):
                return False
            return state.cluster.leader not in (None, info.cluster.leader)

        await wait_for(new_leader)
        await js.publish(spec.subject("k", "test.written"), b"{}", stream=spec.name)

        await cluster.start_node(crashed)

        async def every_replica_current() -> bool:
            state = await js.stream_info(spec.name)
            return len(state.cluster.replicas) == 2 and all(peer.current for peer in state.cluster.replicas)

        await wait_for(every_replica_current)
        assert (await js.stream_info(spec.name)).state.messages == 1
    finally:
        if client is not None:
            await client.close()
        await cluster.stop()


def test_a_cluster_needs_at_least_two_servers(tmp_path):
    # One server alone refuses to run JetStream clustered ("requires configured routes").
    with pytest.raises(ValueError, match="at least two servers, got 1"):
        EmbeddedNatsCluster(tmp_path, size=1)


def test_every_server_gets_ports_of_its_own(tmp_path):
    cluster = EmbeddedNatsCluster(tmp_path, size=5)
    ports = [
        port for node in cluster.nodes for port in (node.client_port, node.route_port, node.monitor_port)
    ]
    assert len(set(ports)) == 15
    assert cluster.urls == [f"nats://127.0.0.1:{node.client_port}" for node in cluster.nodes]


async def test_a_cluster_that_cannot_start_leaves_nothing_running(tmp_path):
    cluster = EmbeddedNatsCluster(tmp_path, size=2)
    (tmp_path / "nats-cluster").write_text("a file where the stores should go")
    with pytest.raises(NotADirectoryError):
        await cluster.start()
    assert cluster.processes == [None, None]
    await cluster.stop_node(0)  # never started: nothing to stop
