"""A NATS JetStream cluster of several local servers: replicated streams and failover, on one machine.

Each server has its own client, route and monitoring ports (kept across a stop and a start, so
clients and routes find it again) and its own store. A server counts as ready when its monitoring
`/healthz` answers 200, which in a cluster also means it is current with a JetStream meta leader:
`start` returns once the cluster can create replicated streams, not merely accept connections.
"""

from __future__ import annotations

import asyncio
import signal
from dataclasses import dataclass
from pathlib import Path

from sophia.engines.nats import binary
from sophia.engines.process import SupervisedProcess, free_ports, tcp_answers

HOST = "127.0.0.1"
CLUSTER_NAME = "sophia"
HEALTHZ_REQUEST = f"GET /healthz HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode()


@dataclass(frozen=True, slots=True)
class ClusterNode:
    """One server of the cluster: its name and ports."""

    name: str
    client_port: int
    route_port: int
    monitor_port: int

    @property
    def url(self) -> str:
        return f"nats://{HOST}:{self.client_port}"

    @property
    def route_url(self) -> str:
        return f"nats://{HOST}:{self.route_port}"


class EmbeddedNatsCluster:
    """`size` nats-servers with JetStream routed into one cluster, storing under `data_dir`."""

    def __init__(self, data_dir: Path, size: int = 3) -> None:
        if size < 2:  # nats-server will not run a JetStream cluster without a route to another
            raise ValueError(f"a cluster needs at least two servers, got {size}")
        self.data_dir = data_dir.resolve() / "nats-cluster"
        ports = free_ports(3 * size, HOST)
        self.nodes = [
            ClusterNode(f"sophia-{index}", *ports[3 * index : 3 * index + 3]) for index in range(size)
        ]
        self.processes: list[SupervisedProcess | None] = [None] * size

    @property
    def urls(self) -> list[str]:
        """Every server's client URL, in node order."""
        return [node.url for node in self.nodes]

    async def start(self) -> list[str]:
        """Start every server (at once: none is healthy before a quorum elects a meta leader)."""
        try:
            await asyncio.gather(*(self.start_node(index) for index in range(len(self.nodes))))
        except BaseException:
            await self.stop()
            raise
        return self.urls

    async def start_node(self, index: int) -> None:
        """Start one server (again) on its ports and store; returns once it is healthy."""
        node = self.nodes[index]
        store_dir = self.data_dir / node.name
        store_dir.mkdir(parents=True, exist_ok=True)
        routes = ",".join(other.route_url for other in self.nodes if other is not node)
        argv = [
            str(binary()),
            "--addr",
            HOST,
            "--port",
            str(node.client_port),
            "--http_port",
            str(node.monitor_port),
            "--server_name",
            node.name,
            "--jetstream",
            "--store_dir",
            str(store_dir),
            "--cluster_name",
            CLUSTER_NAME,
            "--cluster",
            node.route_url,
            "--routes",
            routes,
        ]
        log_path = self.data_dir / "logs" / f"{node.name}.log"
        process = SupervisedProcess(f"nats-{node.name}", argv, lambda: _healthy(node), log_path)
        self.processes[index] = process
        await process.start()

    async def stop_node(self, index: int, *, kill: bool = False) -> None:
        """Stop one server (SIGKILL with `kill`, as a crash); it stays down until `start_node`."""
        process = self.processes[index]
        if process is None:
            return
        if kill:
            process.stop_signal = signal.SIGKILL
        await process.stop()

    async def stop(self) -> None:
        await asyncio.gather(*(self.stop_node(index) for index in range(len(self.nodes))))


async def _healthy(node: ClusterNode) -> bool:
    return await tcp_answers(HOST, node.monitor_port, HEALTHZ_REQUEST, b"HTTP/1.1 200")
