"""What every benchmark shares: engines and a migrated database, the API server as a child process,
the wrk and k6 load generators, synthetic catalog rows, percentiles and a description of the machine.

Engines named by `SOPHIA_DATABASE_URL` / `SOPHIA_REDIS_URL` / `SOPHIA_NATS_URL` are used as they are
(the test session sets them); the missing ones are started embedded in a temporary directory. Either
way the benchmark gets a database of its own, created, migrated and dropped here. All traffic stays on
127.0.0.1; every wait has a deadline.
"""

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
from harness.report import add_common_arguments, describe, emit, machine
from harness.server import ApiServer
from harness.wrk import wrk, wrk_binary, wrk_records

__all__ = [
    "DEFAULT_SERVER",
    "DEFAULT_WORKERS",
    "HOST",
    "ApiServer",
    "Environment",
    "FixedRate",
    "Measurement",
    "OtherCpu",
    "add_common_arguments",
    "catalog_rows",
    "comparison",
    "copy_rows",
    "count_rows",
    "describe",
    "emit",
    "environment",
    "k6_records",
    "k6_version",
    "machine",
    "median",
    "paired_ratio",
    "percentile",
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
