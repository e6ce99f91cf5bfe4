"""One typed settings object per process, built once from `SOPHIA_*` environment variables."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sophia.shared.logging import CLIENT_LINES_PER_S
from sophia.shared.urls import without_password

MAX_TIMEOUT_S = 86_400.0
"""No wait on another process may be set longer than a day (an infinite one hung commands)."""


class Settings(BaseSettings):
    """Every knob Sophia has; the README's settings table is generated from these descriptions."""

    model_config = SettingsConfigDict(env_prefix="SOPHIA_", extra="ignore", frozen=True, allow_inf_nan=False)

    @field_validator("database_url", "redis_url", "nats_url")
    @classmethod
    def _an_engine_url(cls, url: str | None) -> str | None:
        """A URL a client can take apart (its scheme, a port in range), refused here naming its
        variable rather than by the client, later, with a traceback. Not echoed: it may hold a
        password."""
        if not url:  # unset (empty is unset too: the engines are then embedded, or found running)
            return url
        for one in url.split(","):  # NATS takes a list of servers
            try:
                parts = urlsplit(one.strip())
                parts.port  # noqa: B018 (reading it checks it: a port past 65535 or not a number raises)
            except ValueError as error:
                raise ValueError(f"not a URL a client can use ({error})") from None
            if not parts.scheme or (not parts.netloc and not parts.path):
                raise ValueError("not a URL a client can use (no scheme://host)")
        return url

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.db_pool_min_size > self.db_pool_max_size:
            raise ValueError(
                f"SOPHIA_DB_POOL_MIN_SIZE ({self.db_pool_min_size}) is more than "
                f"SOPHIA_DB_POOL_MAX_SIZE ({self.db_pool_max_size})"
            )
        for name in type(self).model_fields:
            if name.endswith("_timeout_s") and getattr(self, name) > MAX_TIMEOUT_S:
                raise ValueError(f"SOPHIA_{name.upper()} is at most {MAX_TIMEOUT_S:g} s (a day)")
        return self

    database_url: str | None = Field(
        None, description="PostgreSQL DSN. Unset: `sophia up` starts embedded PostgreSQL."
    )
    redis_url: str | None = Field(
        None, description="Redis/Valkey URL. Unset: `sophia up` starts embedded Valkey."
    )
    nats_url: str | None = Field(
        None, description="NATS URL (JetStream enabled). Unset: `sophia up` starts embedded NATS."
    )
    data_dir: Path = Field(Path(".sophia"), description="Where embedded engines, keys and reports live.")

    api_host: str = Field("127.0.0.1", description="Address the API binds.")
    api_port: int = Field(8000, ge=0, le=65535, description="Port the API binds (0: a free one).")
    realtime_host: str = Field("127.0.0.1", description="Address the real-time service binds.")
    realtime_port: int = Field(
        8001, ge=0, le=65535, description="Port of the real-time service's /ws (0: a free one)."
    )
    realtime_max_queue: int = Field(
        1000, ge=1, description="Frames queued for one WebSocket; a client further behind is disconnected."
    )
    realtime_send_buffer_bytes: int = Field(
        131_072,
        ge=0,
        description="Kernel send buffer of each WebSocket (0: the kernel's autotuning, up to MBs a client).",
    )
    realtime_max_subscriptions: int = Field(100, ge=1, description="Channels one WebSocket may subscribe to.")
    realtime_max_frames_per_s: int = Field(
        50,
        ge=1,
        description="Frames a second one WebSocket may send (bursts: twice that); more: closed 1008.",
    )
    realtime_history_events: int = Field(
        10_000, ge=0, description="Recent events of each stream a process keeps to serve resumes from memory."
    )
    realtime_max_frame_bytes: int = Field(
        65_536, ge=1024, description="Largest frame a client may send (larger: closed with 1009)."
    )
    realtime_ops_interval_s: float = Field(
        1.0, gt=0, le=60, description="How often the `ops` channel carries the real-time service's figures."
    )
    web_realtime_url: str | None = Field(
        None,
        description="The real-time /ws URL browsers of the dashboard use (unset: page host, realtime_port).",
    )
    web_workers_metrics_url: str | None = Field(
        None, description="The workers' /metrics, read by the dashboard's ops view (`sophia up` sets it)."
    )
    web_realtime_metrics_url: str | None = Field(
        None, description="The real-time service's /metrics, read by the ops view (`sophia up` sets it)."
    )
    web_session_ttl_s: float = Field(
        28_800, gt=0, le=2_592_000, description="How long a dashboard sign-in lasts (its cookie's lifetime)."
    )
    mcp_host: str = Field("127.0.0.1", description="Address the MCP gateway binds.")
    mcp_port: int = Field(8002, ge=0, le=65535, description="Port of the MCP gateway's /mcp (0: a free one).")
    mcp_upstreams_file: Path | None = Field(
        None, description="YAML file of the upstream MCP servers the gateway federates (re-read on change)."
    )
    mcp_list_max_tools: int = Field(
        128,
        ge=2,
        le=10_000,
        description="Most tools the gateway's tools/list shows (find_tools finds the rest).",
    )
    mcp_call_timeout_s: float = Field(
        30.0, gt=0, description="Longest a tool call through the gateway may take, end to end."
    )
    mcp_rate_per_s: float = Field(
        200.0, gt=0, description="Requests a second one key may send to the gateway (bursts: twice that)."
    )
    mcp_listen_per_key: int = Field(
        16,
        ge=1,
        le=1024,
        description="Most subscriptions/listen streams one key may hold open at a gateway process "
        "(of 1,024).",
    )
    mcp_lean_calls: bool = Field(
        True,
        description="Answer plain 2026-07-28 tools/call in the gateway itself, not through the SDK's "
        "server (the same answers, less CPU).",
    )
    mcp_allowed_hosts: str = Field(
        "127.0.0.1:*,localhost:*,[::1]:*",
        description="Host headers the gateway answers (DNS-rebinding protection), comma-separated.",
    )
    mcp_allowed_origins: str = Field(
        "http://127.0.0.1:*,http://localhost:*,http://[::1]:*",
        description="Origin headers the gateway accepts from browsers, comma-separated.",
    )
    mcp_jwt_issuer: str | None = Field(
        None, description="Accept JWT bearer tokens from this issuer at the gateway (with mcp_jwt_key_file)."
    )
    mcp_jwt_audience: str | None = Field(None, description="The `aud` a gateway JWT must carry.")
    mcp_jwt_key_file: Path | None = Field(
        None, description="PEM public key (RS256/ES256) or a file holding the HS256 secret, for gateway JWTs."
    )
    api_workers: int = Field(2, ge=1, le=64, description="API worker processes.")
    api_server: Literal["granian", "uvicorn"] = Field(
        "granian", description="ASGI server (chosen by measurement, docs/decisions/0002-asgi-server.md)."
    )
    shutdown_grace_s: float = Field(
        10.0, gt=0, description="How long a draining API waits for in-flight requests."
    )

    db_pool_min_size: int = Field(2, ge=0, description="Connections each API process keeps open.")
    db_pool_max_size: int = Field(8, ge=1, description="Most connections per API process.")
    db_max_queries: int = Field(50_000, ge=1, description="Queries before a pooled connection is replaced.")
    db_max_inactive_connection_lifetime_s: float = Field(
        300.0, ge=0, description="Idle seconds before a pooled connection is closed."
    )
    db_command_timeout_s: float = Field(10.0, gt=0, description="Timeout of one SQL command.")
    db_list_timeout_s: float = Field(
        2.0, gt=0, description="Timeout of a records list query (cancelled on the server, then 503)."
    )
    db_maintenance_timeout_s: float = Field(
        600.0, gt=0, description="Timeout of long statements: bulk merges, view refreshes, migrations."
    )
    db_connect_timeout_s: float = Field(5.0, gt=0, description="Timeout of opening a connection.")
    db_acquire_timeout_s: float = Field(
        2.0, gt=0, description="Wait for a pooled connection before answering 503."
    )
    engine_timeout_s: float = Field(2.0, gt=0, description="Timeout of a Redis or NATS probe.")
    anonymous_detail: bool = Field(
        True, description="Show /readyz's checks and /metrics without a key (false: a read key is needed)."
    )
    readiness_reuse_s: float = Field(
        1.0, ge=0, description="How long a /readyz verdict is reused (probes reach the engines once per it)."
    )

    max_body_bytes: int = Field(1_048_576, ge=1024, description="Largest JSON request body (bytes).")
    max_bulk_bytes: int = Field(
        1_073_741_824, ge=1024, description="Largest streamed NDJSON bulk body (bytes)."
    )
    max_line_bytes: int = Field(1_048_576, ge=256, description="Largest single NDJSON line (bytes).")
    bulk_spool_memory_bytes: int = Field(
        64 * 1024 * 1024,
        ge=0,
        description="Checked bulk rows kept in memory, all uploads of a process together (then temp files).",
    )
    bulk_max_uploads: int = Field(
        16, ge=1, description="Bulk bodies a process spools at once; one more is a 503 with Retry-After."
    )
    body_idle_timeout_s: float = Field(
        30.0, gt=0, description="A request body that sends nothing for this long is refused (408)."
    )
    page_size_default: int = Field(50, ge=1, description="Records per page when none is asked.")
    page_size_max: int = Field(500, ge=1, description="Most records per page.")
    api_key_cache_ttl_s: float = Field(
        1.0, ge=0, description="How long a verified API key is trusted from memory."
    )
    api_key_miss_ttl_s: float = Field(
        5.0, ge=0, description="How long a key that did not verify is refused from memory."
    )
    auth_failure_limit: int = Field(
        20, ge=1, description="Keys that fail from one address, within the window, before it gets 429."
    )
    auth_failure_window_s: float = Field(10.0, gt=0, description="The window of SOPHIA_AUTH_FAILURE_LIMIT.")

    cache_enabled: bool = Field(
        True, description="Cache reads (false: every read goes to PostgreSQL, e.g. to measure it)."
    )
    cache_l1_max_bytes: int = Field(
        64 * 1024 * 1024, ge=0, description="Bytes of responses each API process keeps in memory (L1)."
    )
    cache_ttl_session_s: float = Field(300.0, gt=0, description="Freshness of the `session` TTL class.")
    cache_ttl_api_s: float = Field(
        60.0, gt=0, description="Freshness of the `api` class: pages, views (and HTTP max-age)."
    )
    cache_ttl_record_s: float = Field(
        300.0,
        gt=0,
        description="Freshness of a record read by id (`record` class): every write invalidates it by id, "
        "so this only bounds how long a change made around Sophia (plain SQL) goes unseen.",
    )
    cache_ttl_static_s: float = Field(3600.0, gt=0, description="Freshness of the `static` class.")
    cache_ttl_ml_s: float = Field(3600.0, gt=0, description="Freshness of cached model predictions.")
    cache_stale_if_error_s: float = Field(
        300.0,
        ge=0,
        description="How long past freshness a value is served, marked stale, while its source fails.",
    )
    cache_lock_s: float = Field(
        2.0,
        ge=0,
        description="Cross-process stampede lock: how long other processes wait for one loader (0: off).",
    )
    cache_negative_ttl_s: float = Field(5.0, ge=0, description="How long a 404 is cached.")
    cache_key_prefix: str = Field(
        "sophia:cache:",
        min_length=1,
        description="Namespace of the cache's Redis keys and channel (one per catalog sharing a Redis).",
    )
    cache_redis_timeout_s: float = Field(0.5, gt=0, description="Timeout of one cache call to Redis (L2).")
    redis_max_connections: int = Field(
        64, ge=8, description="Most Redis connections per process; callers past it wait for one, never fail."
    )
    cache_invalidate_max_keys: int = Field(
        1_000, ge=1, description="A bulk write updating more records clears the whole cache instead."
    )

    events_stream_prefix: str = Field(
        "",
        pattern=r"^[A-Za-z0-9_-]*$",
        description="Prefix of every stream's name and subjects (several catalogs on one NATS).",
    )
    events_partitions: int = Field(10, ge=1, le=1000, description="Partitions (subjects) per event stream.")
    events_replicas: int = Field(
        1, ge=1, le=5, description="Replicas per event stream (1 embedded, 3 in a NATS cluster)."
    )
    events_max_age_s: float = Field(7 * 24 * 3600.0, gt=0, description="How long a stream keeps events.")
    events_max_bytes: int = Field(
        1024**3, ge=1024 * 1024, description="Bytes a stream may hold; when full, publishers are refused."
    )
    nats_sync_interval: str = Field(
        "2m",
        pattern=r"^(always|[0-9]+(ms|s|m|h))$",
        description="How often embedded JetStream flushes to disk ('always': before every ack).",
    )
    nats_max_procs: int = Field(
        1,
        ge=0,
        description="Cores embedded NATS's Go runtime runs on (GOMAXPROCS; 0: every core). One "
        "spent a fifth to a third less CPU a message on 2 cores.",
    )
    workers_metrics_port: int = Field(
        0, ge=0, le=65535, description="Port of the workers' /metrics (0: not served)."
    )
    workers_metrics_host: str = Field(
        "127.0.0.1", description="Address the workers' /metrics binds (loopback unless told otherwise)."
    )
    events_max_batch: int = Field(10_000, ge=1, description="Most events one POST /api/v1/events may carry.")
    events_max_body_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="Largest POST /api/v1/events body (bytes)."
    )
    events_backpressure_fill: float = Field(
        0.9, gt=0, le=1, description="Fill of a stream (of its max bytes) from which new events are refused."
    )
    events_ack_wait_s: float = Field(
        10.0,
        gt=0,
        description="How long a processor holds a message before JetStream redelivers it (renewed).",
    )
    events_sink_batch: int = Field(
        1_000,
        ge=1,
        description="Most messages the event-storing processors fetch at once, stored in one COPY.",
    )
    events_sink_in_flight: int = Field(
        20_000,
        ge=1,
        description=(
            "Most events a store processor holds un-acked (a few batches: one fetched while one stores)."
        ),
    )
    jobs_debounce_s: float = Field(
        5.0,
        gt=0,
        description="Window in which deal changes are announced once to active_deals_mv's caches and "
        "live subscribers.",
    )
    jobs_concurrency: int = Field(4, ge=1, description="Background jobs one workers process runs at once.")
    jobs_max_attempts: int = Field(5, ge=1, description="Attempts of a job before it is failed.")
    jobs_retention_s: float = Field(
        7 * 24 * 3600.0, gt=0, description="How long a finished job stays queryable before it is deleted."
    )
    outbox_batch: int = Field(500, ge=1, le=10_000, description="Outbox rows the relay publishes per batch.")
    outbox_poll_s: float = Field(
        1.0, gt=0, description="How often the relay looks at the outbox when no NOTIFY wakes it."
    )
    outbox_gather_s: float = Field(
        0.02,
        ge=0,
        le=1,
        description="Woken by a write, the relay starts a batch no sooner than this after its last "
        "one began: writes closer together leave in one batch (0: each at once).",
    )

    ml_enabled: bool = Field(
        True, description="Load the models and serve /api/v1/ml/* and /v1/embeddings in this API."
    )
    ml_quantized: bool = Field(
        True, description="int8 embedding graph (2x faster here, cosine >= 0.99); false: fp32, exact."
    )
    ml_threads: int | None = Field(
        None, ge=1, description="Threads one model call uses (unset: the CPUs over the API workers)."
    )
    ml_nice: int = Field(
        10,
        ge=0,
        le=19,
        description="How far below request handling the model threads' CPU priority is (nice; 0: equal).",
    )
    ml_max_batch: int = Field(64, ge=1, description="Most inputs one model call takes (dynamic batching).")
    ml_max_wait_s: float = Field(
        0.005, ge=0, description="How long a model call waits for its batch to fill after the first input."
    )
    ml_max_queue: int = Field(
        4096, ge=1, description="Inputs waiting for a model call; more are refused with 503 + Retry-After."
    )
    ml_timeout_s: float = Field(5.0, gt=0, description="Deadline of one request's inputs in the queue.")
    ml_max_inputs: int = Field(256, ge=1, description="Most inputs one ML request may carry.")
    ml_labels_file: Path | None = Field(
        None,
        description="JSON of label -> descriptions, classified zero-shot (unset: the built-in head).",
    )
    ml_classifier_file: Path | None = Field(
        None,
        description="A label head from `sophia ml train-classifier` (before SOPHIA_ML_LABELS_FILE).",
    )
    ml_text_fields_file: Path | None = Field(
        None, description="JSON of record kind -> text fields the enrichment reads (unset: built-in)."
    )
    ml_label_threshold: float = Field(
        0.3, ge=-1, le=1, description="Similarity from which a label is given (zero-shot classification)."
    )
    ml_max_input_chars: int = Field(
        20_000, ge=1, description="Longest input text (the model reads its first 256 tokens)."
    )

    breaker_failure_rate: float = Field(
        0.5, gt=0, le=1, description="Failure rate that opens a circuit breaker."
    )
    breaker_window: int = Field(20, ge=1, description="Calls in a breaker's sliding window.")
    breaker_min_calls: int = Field(5, ge=1, description="Calls before a breaker may open.")
    breaker_open_s: float = Field(5.0, gt=0, description="How long an open breaker rejects.")

    log_level: str = Field("INFO", description="Log level (DEBUG, INFO, WARNING, ERROR).")
    log_client_lines_per_s: float = Field(
        CLIENT_LINES_PER_S,
        ge=0,
        description=(
            "Access lines of failed or slow requests and warnings of 503s written at most this often a "
            "second of each kind (a route and status, or what answered before routing), twice that in a "
            "burst; past it they are counted in the next line's `suppressed`. 0: every one."
        ),
    )
    log_json: bool = Field(True, description="JSON logs (false: human-readable console).")
    access_log: bool = Field(
        False,
        description=(
            "Log every request (else server errors and slow requests only, at most "
            "SOPHIA_LOG_CLIENT_LINES_PER_S a second of each kind)."
        ),
    )
    slow_request_s: float = Field(
        1.0, gt=0, description="Requests slower than this are logged (at most SOPHIA_LOG_CLIENT_LINES_PER_S)."
    )

    seed_records: int = Field(
        5_000, ge=0, description="Demo records `sophia up` loads into an empty catalog."
    )

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        """What `repr` shows (a traceback, an error naming a model that holds these): every URL
        without its password, as logs show URLs."""
        for name, value in super().__repr_args__():
            yield name, without_password(value) if name and name.endswith("_url") and value else value

    @property
    def model_threads(self) -> int:
        """`ml_threads`, or this process's CPUs shared out over the API workers (at least 1).

        Each API worker runs its own copy of the model: 2 workers x 2 threads on 2 cores spin
        against each other and serve 30 % less (docs/benchmarks.md, "Workers and model threads")."""
        if self.ml_threads is not None:
            return self.ml_threads
        return max(1, available_cpus() // self.api_workers)


CPU_QUOTA = Path("/sys/fs/cgroup/cpu.max")
"""cgroup v2's CPU limit of this process's container: `<quota> <period>` in µs, or `max <period>`."""


def available_cpus(quota_file: Path | None = None) -> int:
    """The CPUs this process may run on, capped by its container's CPU quota where one is set (a
    container limited to 2 CPUs on a 64-core host sees 64 in its affinity)."""
    cpus = len(os.sched_getaffinity(0))
    try:
        quota, period = (quota_file or CPU_QUOTA).read_text(encoding="ascii").split()
        limit = int(quota) // int(period)
    except (OSError, ValueError):  # no cgroup v2 file, or `max`: no quota
        return cpus
    return max(1, min(cpus, limit))


def settings_table() -> str:
    """The README's table of settings, generated so the docs cannot drift from the code."""
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        default = "unset" if field.default is None else f"`{field.default}`"
        rows.append(f"| `SOPHIA_{name.upper()}` | {default} | {field.description} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(settings_table())
