"""The asyncpg pool behind a circuit breaker; engine failures surface as `Unavailable`."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import TracebackType

import asyncpg
import orjson

from sophia.core.errors import Invalid, Unavailable
from sophia.shared.logging import get_logger
from sophia.shared.metrics import DB_POOL_IDLE, DB_POOL_MAX, DB_POOL_SIZE
from sophia.shared.resilience import BreakerOpen, CircuitBreaker
from sophia.shared.settings import Settings

Connection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy
"""What repositories take: a plain connection (migrations, tests) or one borrowed from the pool."""

log = get_logger(__name__)

POSTGRES_ERRORS: tuple[type[BaseException], ...] = (asyncpg.PostgresError, asyncpg.InterfaceError)
"""Whatever asyncpg raises for PostgreSQL's answer or for the connection to it: what a command-line
tool reports in one line instead of a traceback."""


def not_migrated(error: BaseException) -> bool:
    """Whether `error` says the schema is missing: a database `sophia migrate` has not run on."""
    return isinstance(error, asyncpg.UndefinedTableError | asyncpg.InvalidSchemaNameError)


ENGINE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.InterfaceError,
    # "cannot switch to state 12; another operation (2) is in progress": a connection whose server
    # went away mid-operation (seen when PostgreSQL was killed under load), not a wrong statement.
    asyncpg.InternalClientError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
    asyncpg.InsufficientResourcesError,
    asyncpg.TransactionRollbackError,  # deadlock / serialization failure: retryable, so 503
)
"""What means "Postgres is unreachable", as opposed to "this statement was wrong"."""


class PoolExhausted(Exception):
    """Every connection of this process's pool is in use, and none came free in time."""


class ConnectTimedOut(ConnectionError):
    """PostgreSQL did not answer a new connection in time: a server gone quiet, not a busy pool."""


SATURATION_ERRORS: tuple[type[BaseException], ...] = (
    PoolExhausted,
    TimeoutError,  # a statement past its time limit
    asyncpg.QueryCanceledError,  # statement_timeout on the server
    asyncpg.TooManyConnectionsError,
    asyncpg.TransactionRollbackError,
)
"""Engine errors that mean "busy", not "down": answered 503, but they never open the breaker."""


def _encode_jsonb(value: object) -> bytes:
    """jsonb's binary format is a version byte (1) and the JSON text; str and bytes pass through
    as JSON text (PostgreSQL parses and checks it)."""
    if isinstance(value, bytes):
        return b"\x01" + value
    if isinstance(value, str):
        return b"\x01" + value.encode()
    try:
        return b"\x01" + orjson.dumps(value)
    except orjson.JSONEncodeError:
        # orjson stops at 64-bit integers; jsonb (numeric) does not, and bulk ingest stores them.
        return b"\x01" + json.dumps(value, allow_nan=False).encode()


def _decode_jsonb(data: bytes) -> object:
    return orjson.loads(data[1:])


async def _no_reset(connection: asyncpg.Connection) -> None:
    """Skip asyncpg's per-release `RESET ALL; UNLISTEN *; ...` round trip (+12 % reads, measured).

    Safe because Sophia keeps no session state on pooled connections (no SET, LISTEN or held
    advisory locks); asyncpg still rolls back a transaction left open.
    """


async def _init_connection(connection: asyncpg.Connection) -> None:
    await connection.set_type_codec(
        "jsonb", encoder=_encode_jsonb, decoder=_decode_jsonb, schema="pg_catalog", format="binary"
    )


class Database:
    """Owns the pool: `async with Database(settings) as db`, then `async with db.connection()`."""

    def __init__(self, settings: Settings, dsn: str | None = None) -> None:
        self.settings = settings
        self.dsn = dsn or settings.database_url
        if not self.dsn:
            raise ValueError("SOPHIA_DATABASE_URL is not set and no DSN was given")
        self.breaker = CircuitBreaker(
            "postgres",
            failure_rate=settings.breaker_failure_rate,
            window=settings.breaker_window,
            min_calls=settings.breaker_min_calls,
            open_s=settings.breaker_open_s,
            failure_types=ENGINE_ERRORS,
            saturation_types=SATURATION_ERRORS,
        )
        self._pool: asyncpg.Pool | None = None

    async def open(self, *, require_database: bool = True) -> None:
        """Open the pool. With `require_database=False` a process starts while PostgreSQL is down
        (its requests answer 503 until it is back) instead of failing to start."""
        try:
            self._pool = await self._create_pool(self.settings.db_pool_min_size)
        except ENGINE_ERRORS as error:
            if require_database:
                raise Unavailable(f"PostgreSQL is unreachable: {error}", retry_after_s=5) from error
            log.warning("database_unreachable_at_start", error=repr(error))
            self._pool = await self._create_pool(0)
        DB_POOL_MAX.set(self.settings.db_pool_max_size)

    async def _create_pool(self, min_size: int) -> asyncpg.Pool:
        settings = self.settings
        return await asyncpg.create_pool(
            self.dsn,
            min_size=min_size,
            max_size=settings.db_pool_max_size,
            max_queries=settings.db_max_queries,
            max_inactive_connection_lifetime=settings.db_max_inactive_connection_lifetime_s,
            command_timeout=settings.db_command_timeout_s,
            timeout=settings.db_connect_timeout_s,
            init=_init_connection,
            reset=_no_reset,
            server_settings={"timezone": "UTC", "application_name": "sophia"},
        )

    async def close(self, timeout_s: float = 10.0) -> None:
        if self._pool is not None:
            try:
                await asyncio.wait_for(self._pool.close(), timeout_s)
            except TimeoutError:
                self._pool.terminate()
            self._pool = None

    async def __aenter__(self) -> Database:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise Unavailable("The database pool is not open", retry_after_s=1)
        return self._pool

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.pool.PoolConnectionProxy]:
        """A pooled connection; unreachable Postgres or an exhausted pool raise `Unavailable`."""
        try:
            async with self.breaker, contextlib.AsyncExitStack() as held:
                try:
                    # A timer, not asyncpg's `acquire(timeout=)`: that runs the acquisition in a
                    # task of its own (asyncio.wait_for), a sixth of an uncached read's API CPU.
                    async with asyncio.timeout(self.settings.db_acquire_timeout_s):
                        connection = await held.enter_async_context(self.pool.acquire())
                except TimeoutError as error:
                    raise self._acquire_timed_out() from error
                yield connection
        except BreakerOpen:
            raise
        except (asyncpg.DataError, OverflowError) as error:
            # The last line of defence: the edges validate, but a value PostgreSQL refuses
            # (NUL in text, NaN in JSON, a date or number out of range) is the caller's error.
            raise Invalid(f"PostgreSQL refused a value: {type(error).__name__}.") from error
        except (PoolExhausted, TimeoutError, asyncpg.QueryCanceledError) as error:
            raise Unavailable(
                "PostgreSQL is busy: no connection or no answer within the time limit "
                f"({type(error).__name__})",
                retry_after_s=1,
            ) from error
        except ENGINE_ERRORS as error:
            raise Unavailable(
                f"PostgreSQL is unavailable: {type(error).__name__}", retry_after_s=2
            ) from error

    def _acquire_timed_out(self) -> Exception:
        """Saturation if every connection of the pool is in use; else the wait was for a new
        connection that PostgreSQL never answered: an outage, which the breaker counts."""
        pool = self.pool
        if pool.get_size() >= self.settings.db_pool_max_size and pool.get_idle_size() == 0:
            return PoolExhausted(f"all {pool.get_size()} connections of this process are in use")
        return ConnectTimedOut(f"no new connection within {self.settings.db_acquire_timeout_s:g} s")

    def observe(self) -> None:
        """Copy pool usage into the Prometheus gauges (called when /metrics is scraped)."""
        if self._pool is not None:
            DB_POOL_SIZE.set(self._pool.get_size())
            DB_POOL_IDLE.set(self._pool.get_idle_size())

    async def ping(self) -> None:
        async with self.connection() as connection:
            await connection.fetchval("SELECT 1", timeout=self.settings.engine_timeout_s)
