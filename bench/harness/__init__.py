"""What every benchmark shares: engines and a migrated database, the API server and the workers as
child processes, the wrk and k6 load generators, raw JetStream publishing, synthetic catalog rows,
percentiles, CPU by component, a description of the machine, and each benchmark's headline: its row
of the table at the top of docs/benchmarks.md, saved with `--save` (`make bench` saves every one).

Engines named by `SOPHIA_DATABASE_URL` / `SOPHIA_REDIS_URL` / `SOPHIA_NATS_URL` are used as they are
(the test session sets them); the missing ones are started embedded in a temporary directory. Either
way the benchmark gets a database of its own, created, migrated and dropped here. All traffic stays on
127.0.0.1; every wait has a deadline.
"""

from harness.cpu import CpuSplit
from harness.database import (
    DEFAULT_SERVER,
    DEFAULT_WORKERS,
    HOST,
    Environment,
    catalog_rows,
    copy_rows,
    count_rows,
    environment,
    run_async,
    seed,
    truncate,
)
from harness.jetstream import consumer_exists, delete_streams, message_ids, publish_rate
from harness.k6 import FixedRate, k6_records, k6_version
from harness.measure import (
    Measurement,
    OtherCpu,
    comparison,
    median,
    paired_ratio,
    percentile,
    ratio,
    settle,
    side_line,
)
from harness.report import Figure, Goal, Headline, add_common_arguments, describe, emit, machine
from harness.server import ApiServer
from harness.workers import WorkersProcess
from harness.wrk import wrk, wrk_binary, wrk_records

__all__ = [
    "DEFAULT_SERVER",
    "DEFAULT_WORKERS",
    "HOST",
    "ApiServer",
    "CpuSplit",
    "Environment",
    "Figure",
    "FixedRate",
    "Goal",
    "Headline",
    "Measurement",
    "OtherCpu",
    "WorkersProcess",
    "add_common_arguments",
    "catalog_rows",
    "comparison",
    "consumer_exists",
    "copy_rows",
    "count_rows",
    "delete_streams",
    "describe",
    "emit",
    "environment",
    "k6_records",
    "k6_version",
    "machine",
    "median",
    "message_ids",
    "paired_ratio",
    "percentile",
    "publish_rate",
    "ratio",
    "run_async",
    "seed",
    "settle",
    "side_line",
    "truncate",
    "wrk",
    "wrk_binary",
    "wrk_records",
]
