"""The pool's lifecycle: no DSN, an unreachable server, a pool not open, a close that hangs."""

import asyncpg
import pytest
from metrics import sample
from waiting import eventually

from sophia.core.errors import Unavailable
from sophia.database import Database
from sophia.engines.process import free_port


def test_a_database_without_any_dsn_is_refused_at_once(settings):
    with pytest.raises(ValueError, match="SOPHIA_DATABASE_URL is not set"):
        Database(settings.model_copy(update={"database_url": None}))


async def test_opening_with_postgres_unreachable_is_unavailable_naming_the_cause(settings):
    database = Database(settings, dsn=f"postgresql://sophia@127.0.0.1:{free_port()}/sophia")
    with pytest.raises(Unavailable, match="PostgreSQL is unreachable") as raised:
        await database.open()
    assert raised.value.retry_after_s == 5
    with pytest.raises(Unavailable, match="The database pool is not open"):
        _ = database.pool


async def test_a_close_that_waits_too_long_on_a_busy_connection_terminates_the_pool(settings, database):
    busy = Database(settings)
    await busy.open()
    async with busy.connection() as connection:
        backend = await connection.fetchval("SELECT pg_backend_pid()")
        await busy.close(timeout_s=0.05)  # waits for this connection, which is not given back
        with pytest.raises(asyncpg.InterfaceError):
            await connection.fetchval("SELECT 1")
    with pytest.raises(Unavailable, match="not open"):
        _ = busy.pool
    await busy.close()  # closing again is harmless

    async def backend_gone() -> bool:
        async with database.connection() as watcher:
            return not await watcher.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", backend)

    await eventually(backend_gone)


async def test_pool_gauges_follow_an_open_pool_and_are_left_alone_once_it_is_closed(settings):
    database = Database(settings.model_copy(update={"db_pool_min_size": 2}))
    async with database:
        database.observe()
        assert sample("sophia_db_pool_connections") == database.pool.get_size() >= 2
        assert sample("sophia_db_pool_idle_connections") == database.pool.get_idle_size()
    size = sample("sophia_db_pool_connections")
    database.observe()
    assert sample("sophia_db_pool_connections") == size


GONE_AWAY = [
    asyncpg.InternalClientError("cannot switch to state 12; another operation (2) is in progress"),
    asyncpg.InterfaceError("cannot perform operation: connection is closed"),
    asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    asyncpg.CannotConnectNowError("the database system is in recovery mode"),
    ConnectionRefusedError(111, "Connection refused"),
]


async def test_every_error_of_a_connection_or_server_gone_away_is_unavailable(settings):
    async with Database(settings.model_copy(update={"breaker_min_calls": 100})) as database:
        for error in GONE_AWAY:
            with pytest.raises(
                Unavailable, match=f"PostgreSQL is unavailable: {type(error).__name__}"
            ) as raised:
                async with database.connection():
                    raise error
            assert raised.value.retry_after_s == 2


async def sleep_past_the_statement_timeout(database: Database) -> None:
    async with database.connection() as connection, connection.transaction():
        await connection.execute("SET LOCAL statement_timeout = 20")
        await connection.fetchval("SELECT pg_sleep(1)")


async def test_an_exhausted_pool_and_slow_statements_answer_unavailable_and_never_open_the_breaker(settings):
    busy = settings.model_copy(
        update={
            "db_pool_min_size": 1,
            "db_pool_max_size": 1,
            "db_acquire_timeout_s": 0.02,
            "breaker_min_calls": 2,
        }
    )
    # Each kind of saturation once more than the breaker's minimum of calls: counted as failures,
    # the calls would open it, and the last would be refused as "postgres is unavailable".
    async with Database(busy) as database:
        async with database.connection():  # the pool's only connection, held
            for _ in range(3):
                with pytest.raises(Unavailable, match="PostgreSQL is busy") as raised:
                    async with database.connection():
                        pass
                assert raised.value.retry_after_s == 1
        for _ in range(3):
            with pytest.raises(Unavailable, match=r"PostgreSQL is busy.*TimeoutError"):
                async with database.connection() as connection:
                    await connection.fetchval("SELECT pg_sleep(1)", timeout=0.02)
        with pytest.raises(Unavailable, match=r"PostgreSQL is busy.*QueryCanceledError"):
            await sleep_past_the_statement_timeout(database)
        assert database.breaker.state.name == "CLOSED"
        async with database.connection() as connection:
            assert await connection.fetchval("SELECT 1") == 1


async def test_a_server_that_accepts_and_never_answers_opens_the_breaker(settings):
    """A blackholed host or a frozen postmaster shows only as timeouts: opening a connection that
    never answers is an outage (the breaker opens), unlike a pool whose connections are all busy."""
    import asyncio

    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # held open, never answered

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    # the acquisition's timer runs out before the connection's own: ConnectTimedOut, not a busy pool
    quiet = settings.model_copy(
        update={"db_acquire_timeout_s": 0.05, "db_connect_timeout_s": 0.1, "breaker_min_calls": 2}
    )
    database = Database(quiet, dsn=f"postgresql://sophia:x@127.0.0.1:{port}/sophia")
    await database.open(require_database=False)
    try:
        for _ in range(2):
            with pytest.raises(Unavailable, match="PostgreSQL is unavailable: ConnectTimedOut"):
                async with database.connection():
                    pass
        assert database.breaker.state.name == "OPEN"
        with pytest.raises(Unavailable, match="postgres is unavailable"):  # refused at once now
            async with database.connection():
                pass
    finally:
        await database.close(timeout_s=1)
        for writer in accepted:
            writer.close()
        server.close()
