"""The `sophia` commands against the test database (in-process through typer's runner)."""

import asyncio
import os
import re
import subprocess
import sys

import asyncpg
import orjson
import pytest
from typer.testing import CliRunner

from sophia.cli import endpoints
from sophia.cli.main import app
from sophia.engines.process import free_port
from sophia.shared.settings import Settings

runner = CliRunner()


@pytest.fixture
def env(settings, tmp_path):
    return {
        "SOPHIA_DATABASE_URL": settings.database_url,
        "SOPHIA_REDIS_URL": settings.redis_url,
        "SOPHIA_NATS_URL": settings.nats_url,
        "SOPHIA_DATA_DIR": str(tmp_path),
        "SOPHIA_CACHE_KEY_PREFIX": settings.cache_key_prefix,
    }


def invoke(env, *args):
    result = runner.invoke(app, list(args), env=env)
    return result


def test_keys_create_prints_a_secret_once_and_list_shows_only_its_prefix(env):
    created = invoke(env, "keys", "create", "--scope", "read", "--name", "cli-test")
    assert created.exit_code == 0, created.output
    secret = created.output.strip()
    prefix = re.fullmatch(r"sk_([0-9a-f]{8})_[\w-]{43}", secret)[1]
    listed = invoke(env, "keys", "list")
    assert prefix in listed.output
    assert secret not in listed.output


def test_keys_revoke_marks_the_key_revoked_and_a_second_revoke_fails(env):
    secret = invoke(env, "keys", "create", "--scope", "write").output.strip()
    prefix = secret.split("_")[1]
    assert invoke(env, "keys", "revoke", prefix).exit_code == 0
    again = invoke(env, "keys", "revoke", prefix)
    assert again.exit_code == 1
    assert "No active key" in again.output


def test_keys_create_refuses_an_unknown_scope(env):
    result = invoke(env, "keys", "create", "--scope", "root")
    assert result.exit_code == 2
    assert "read, write, admin" in result.output


def test_migrate_on_a_migrated_database_says_up_to_date(env):
    result = invoke(env, "migrate")
    assert result.exit_code == 0
    assert "Up to date." in result.output


def test_seed_loads_deterministic_records_through_the_bulk_path(env):
    result = invoke(env, "seed", "--records", "200", "--seed", "7")
    assert result.exit_code == 0, result.output
    assert "200 records" in result.output
    again = invoke(env, "seed", "--records", "200", "--seed", "7")
    assert "0 created, 200 updated" in again.output  # same seed, same keys

    async def count_kinds() -> int:
        connection = await asyncpg.connect(env["SOPHIA_DATABASE_URL"])
        try:
            return await connection.fetchval(
                "SELECT count(DISTINCT (source_system, kind)) FROM sophia_core.unified_data_catalog"
            )
        finally:
            await connection.close()

    assert asyncio.run(count_kinds()) >= 5  # deals, contacts, companies, calls, messages


def test_views_refresh_refreshes_active_deals(env):
    result = invoke(env, "views", "refresh")
    assert result.exit_code == 0
    assert "Refreshed" in result.output


def test_commands_find_the_database_from_a_running_stack(env, tmp_path):
    stack = env | {"SOPHIA_DATABASE_URL": ""}  # blank, not absent: the test process has one set
    endpoints.write(
        Settings(data_dir=tmp_path),
        {"database_url": env["SOPHIA_DATABASE_URL"], "api": "http://127.0.0.1:1", "api_key": "sk_x"},
    )
    assert invoke(stack, "migrate").exit_code == 0
    assert invoke(stack, "env").output.strip() == "export SOPHIA_API=http://127.0.0.1:1 SOPHIA_KEY=sk_x"
    assert oct((tmp_path / "endpoints.json").stat().st_mode & 0o777) == "0o600"
    assert orjson.loads((tmp_path / "endpoints.json").read_bytes())["api_key"] == "sk_x"


def test_views_refresh_without_redis_refreshes_with_no_cache_to_drop(env):
    result = invoke(env | {"SOPHIA_REDIS_URL": ""}, "views", "refresh")
    assert result.exit_code == 0, result.output
    assert "Refreshed active_deals_mv: 0 rows mended." in result.output


def test_serve_runs_the_api_server_with_the_running_stacks_engines(env, tmp_path, monkeypatch):
    """`sophia serve` replaces itself with `python -m sophia.api.server`; the server's workers read
    the engines' URLs from the environment, so it exports those it found in endpoints.json."""
    urls = {"database_url": env["SOPHIA_DATABASE_URL"], "redis_url": env["SOPHIA_REDIS_URL"]}
    endpoints.write(Settings(data_dir=tmp_path), urls)  # a stack without NATS
    for name in ("SOPHIA_DATABASE_URL", "SOPHIA_REDIS_URL", "SOPHIA_NATS_URL"):
        monkeypatch.setenv(name, "")  # as a container without them would start; restored after the test
    executed: list[tuple[str, list[str], dict[str, str]]] = []

    def execv(path: str, arguments: list[str]) -> None:
        variables = ("SOPHIA_DATABASE_URL", "SOPHIA_REDIS_URL", "SOPHIA_NATS_URL")
        executed.append((path, arguments, {name: os.environ[name] for name in variables}))

    monkeypatch.setattr(os, "execv", execv)
    result = invoke({"SOPHIA_DATA_DIR": str(tmp_path)}, "serve")
    assert result.exit_code == 0, result.output
    assert executed == [
        (
            sys.executable,
            [sys.executable, "-m", "sophia.api.server"],
            {
                "SOPHIA_DATABASE_URL": urls["database_url"],
                "SOPHIA_REDIS_URL": urls["redis_url"],
                "SOPHIA_NATS_URL": "",  # none found, none exported
            },
        )
    ]


def test_without_a_database_or_a_running_stack_commands_say_what_to_do(tmp_path):
    result = invoke({"SOPHIA_DATA_DIR": str(tmp_path), "SOPHIA_DATABASE_URL": ""}, "migrate")
    assert result.exit_code != 0
    assert "make up" in str(result.exception) + result.output
    env_result = invoke({"SOPHIA_DATA_DIR": str(tmp_path)}, "env")
    assert "not running" in str(env_result.exception) + env_result.output


async def test_views_refresh_drops_the_running_apis_cached_deal_pages(env, app, client):
    from sophia.cache.catalog import ACTIVE_DEALS_TAG

    cache = app.state.sophia.cache
    for _ in range(50):  # a load overlapping any invalidation (another test's, arriving late) is not kept
        assert (await client.get("/api/v1/deals/active", params={"limit": 1})).status_code == 200
        if ACTIVE_DEALS_TAG in cache.l1.tags():
            break
    assert ACTIVE_DEALS_TAG in cache.l1.tags()

    result = await asyncio.to_thread(invoke, env, "views", "refresh")

    assert result.exit_code == 0, result.output
    for _ in range(2000):  # the invalidation travels through Redis pub/sub
        if ACTIVE_DEALS_TAG not in cache.l1.tags():
            break
        await asyncio.sleep(0.001)
    assert ACTIVE_DEALS_TAG not in cache.l1.tags()


def test_audit_verify_says_the_trail_holds(env):
    result = invoke(env, "audit", "verify")
    assert result.exit_code == 0, result.output
    assert "The audit trail holds" in result.output


def test_audit_verify_exits_1_naming_the_first_broken_row(settings, tmp_path, migrated_database):
    async def tampered() -> str:
        import uuid
        from datetime import UTC, datetime

        from sophia.database import Database, audit

        url = await migrated_database()
        async with Database(settings, dsn=url) as database, database.connection() as connection:
            entries = [
                audit.AuditEntry(uuid.uuid4(), datetime.now(UTC), "cli", "key.created", f"k{n}", {})
                for n in range(3)
            ]
            async with connection.transaction():
                await audit.append(connection, entries)
            await connection.execute(
                "ALTER TABLE sophia_core.audit_log DISABLE TRIGGER audit_log_append_only"
            )
            await connection.execute("UPDATE sophia_core.audit_log SET target = 'forged' WHERE seq = 2")
        return url

    url = asyncio.run(tampered())
    result = invoke({"SOPHIA_DATABASE_URL": url, "SOPHIA_DATA_DIR": str(tmp_path)}, "audit", "verify")
    assert result.exit_code == 1
    assert "broken at row 2" in result.output


def test_analytics_rebuild_summarizes_every_deal_and_says_how_many(env, settings):
    from sophia.core.records import RecordKey
    from sophia.database import catalog

    async def write_deal() -> str:
        connection = await asyncpg.connect(settings.database_url)
        try:
            stored = await catalog.upsert(
                connection,
                RecordKey("rebuilt", "deal", "d-1"),
                '{"dealstage": "contractsent", "amount": "70"}',
            )
            return str(stored.id)
        finally:
            await connection.close()

    async def summarized(deal_id: str) -> tuple[str, str] | None:
        connection = await asyncpg.connect(settings.database_url)
        try:
            row = await connection.fetchrow(
                "SELECT stage, status FROM sophia_analytics.deal_facts WHERE deal_id = $1::uuid", deal_id
            )
            return None if row is None else (row["stage"], row["status"])
        finally:
            await connection.close()

    deal_id = asyncio.run(write_deal())
    result = invoke(env, "analytics", "rebuild")
    assert result.exit_code == 0, result.output
    assert "Rebuilt the analytics:" in result.output
    assert asyncio.run(summarized(deal_id)) == ("contractsent", "open")


def test_starting_the_cli_loads_no_engine_client_and_no_model_code():
    """Every `sophia` command (its --help too) starts by importing the CLI: the engines' clients,
    the job queue and the models' code load only in the commands that use them."""
    probe = (
        "import sys, sophia.cli.main; "
        "print(sorted(m for m in ('nats', 'aiohttp', 'asyncpg', 'redis', 'sophia.workers.jobs', "
        "'sophia.events.dead_letter', 'numpy', 'onnxruntime', 'sophia.ml.encoder') if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()
    assert loaded == "[]"


def test_views_refresh_with_redis_unreachable_refreshes_and_says_the_cache_was_not_told(env):
    dead = f"redis://127.0.0.1:{free_port()}/0"
    result = invoke(env | {"SOPHIA_REDIS_URL": dead}, "views", "refresh")
    assert result.exit_code == 0, result.output
    assert "Refreshed active_deals_mv" in result.output
    assert "did not take the cache invalidation" in " ".join(result.output.split())
