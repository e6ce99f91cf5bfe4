"""Test-session engines: real PostgreSQL, Valkey and NATS, started once (or taken from SOPHIA_*_URL).

The xdist controller starts the engines while the workers collect (2 s of start-up that would
otherwise come first) and hands their URLs over in a file of the session's data directory; each
worker waits for it once collected, then gets a database of its own, migrated from scratch.
"""

from __future__ import annotations

import collections
import gc
import itertools
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import ModuleType

import pytest
import structlog
from structlog.testing import LogCapture, ReturnLogger
from tiers import tier_of

from sophia.engines import EnginesThread
from sophia.shared.settings import Settings

URL_VARIABLES = ("SOPHIA_DATABASE_URL", "SOPHIA_REDIS_URL", "SOPHIA_NATS_URL")
ENGINES_START_TIMEOUT_S = 120.0

# No garbage collection until collection is done (then `pytest_collection_finish` freezes what it
# made and turns the collector back on): the imports and the 1,464 items build a quarter of a
# million objects that live as long as the process, and the collector walked the growing heap
# again and again while they were made, about 0.9 s of each worker's 4 s of start-up CPU.
gc.disable()


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """A module named for a tier that `-m` leaves out is not imported: its imports and its
    parametrization (schemathesis's boundary cases: a second) would cost every xdist worker at
    collection, in every run of the other tiers."""
    tier = tier_of(collection_path)
    if tier is None or not config.option.markexpr:
        return None
    from _pytest.mark.expression import Expression  # what `-m` itself evaluates

    selected = Expression.compile(config.option.markexpr).evaluate(lambda name, **_: name == tier)
    return True if not selected else None


def _urls_file() -> Path:
    return Path(os.environ["SOPHIA_TEST_DATA_DIR"]) / "engine-urls.json"


def _start_engines(engines: EnginesThread, urls_file: Path) -> None:
    """In a thread of the controller: start the engines, then write their URLs (or why not)."""
    try:
        written = {"urls": engines.start().as_env()}
    except Exception as error:
        written = {"error": f"the test engines did not start: {error!r}"}
    partial = urls_file.with_suffix(".tmp")
    partial.write_text(json.dumps(written))
    partial.replace(urls_file)


SCRATCH_MIN_FREE_BYTES = 4 * 1024**3


def _scratch_in_memory() -> None:
    """Temporary files (the engines' data, `tmp_path`) in /dev/shm where it has room and the user
    named no TMPDIR: in memory, with no journal and no writeback. On a virtual disk, the file
    system's work for the engines' writes was 11 s of the fast tier's 19 s of system CPU, and most
    of its run-to-run spread. Set before the xdist workers start, so they and every process a test
    starts agree."""
    if os.environ.get("TMPDIR"):
        return
    shm = Path("/dev/shm")  # noqa: S108 (only a root: mkdtemp makes each directory in it private)
    try:
        usable = shm.is_dir() and os.access(shm, os.W_OK | os.X_OK)
        roomy = usable and shutil.disk_usage(shm).free >= SCRATCH_MIN_FREE_BYTES
    except OSError:
        return
    if roomy:
        os.environ["TMPDIR"] = tempfile.tempdir = str(shm)


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config, "workerinput"):
        return
    if getattr(config.option, "dist", "no") != "no" and getattr(config.option, "tx", None):
        gc.enable()  # xdist's controller (`-n`, or `-d --tx`) collects nothing
    _scratch_in_memory()
    if all(os.environ.get(name) for name in URL_VARIABLES):
        return
    data_dir = Path(tempfile.mkdtemp(prefix="sophia-test-"))
    os.environ["SOPHIA_TEST_DATA_DIR"] = str(data_dir)
    engines = EnginesThread(Settings(data_dir=data_dir), durable=False)
    starting = threading.Thread(target=_start_engines, args=(engines, _urls_file()), name="engines-start")
    starting.start()
    config._sophia_engines = (engines, starting)  # type: ignore[attr-defined]


def pytest_collection_finish(session: pytest.Session) -> None:
    """Before the first test (of a worker, or of a run without xdist): what collection imported
    is moved out of the garbage collector's sight (`gc.freeze`: it lives until the process ends,
    and each full collection no longer walks a quarter of a million objects, 0.6 s of a worker's
    CPU), then the engines' URLs."""
    gc.collect()  # what collection left unreachable is freed, not frozen with the rest
    gc.freeze()
    gc.enable()
    if all(os.environ.get(name) for name in URL_VARIABLES):
        return
    deadline = time.monotonic() + ENGINES_START_TIMEOUT_S
    while not _urls_file().exists():
        if time.monotonic() > deadline:
            pytest.exit(f"the test engines did not start within {ENGINES_START_TIMEOUT_S:.0f} s", 3)
        time.sleep(0.02)
    written = json.loads(_urls_file().read_text())
    if "error" in written:
        pytest.exit(written["error"], 3)
    os.environ.update(written["urls"])


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """An xdist worker, its results sent, ends here without tearing its interpreter down (as
    multiprocessing's children do): freeing its heap object by object took a second that the
    controller spent waiting for it. The controller stops the engines it started."""
    if hasattr(config, "workerinput"):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    started = getattr(config, "_sophia_engines", None)
    if started is not None:
        engines, starting = started
        starting.join(ENGINES_START_TIMEOUT_S)
        engines.stop()
        shutil.rmtree(os.environ["SOPHIA_TEST_DATA_DIR"], ignore_errors=True)  # hundreds of MB a run


async def _create_database(name: str, template: str | None = None) -> str:
    """A new database `name` on the test server (replacing any of that name), a copy of `template`
    if given; returns its DSN."""
    import asyncpg

    base_url = os.environ["SOPHIA_DATABASE_URL"]
    copy = f' TEMPLATE "{template}" STRATEGY FILE_COPY' if template else ""
    admin = await asyncpg.connect(base_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"{copy}')
    finally:
        await admin.close()
    return base_url.rsplit("/", 1)[0] + f"/{name}"


async def _fresh_database(name: str) -> str:
    """A new database `name` on the test server, migrated; returns its DSN."""
    import asyncpg

    from sophia.database.migrations import migrate

    url = await _create_database(name)
    connection = await asyncpg.connect(url)
    try:
        await migrate(connection)
    finally:
        await connection.close()
    return url


@pytest.fixture(scope="session")
def worker_id() -> str:
    """The xdist worker's name ("gw0", ...) or "main" when running in one process."""
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the model graphs are built, once for the whole run: every xdist worker shares the
    directory (a graph is written to a temporary file and renamed, so concurrent builds are safe)."""
    shared = os.environ.get("SOPHIA_TEST_DATA_DIR")
    directory = Path(shared) / "models" if shared else tmp_path_factory.mktemp("models")
    directory.mkdir(exist_ok=True)
    return directory


@pytest.fixture(scope="session")
def sentence_encoder(models_dir: Path):
    """The int8 encoder, one per xdist worker, on one thread: the two workers share two cores, and
    ONNX Runtime's threads spin while they wait for each other (7 s of the fast tier's CPU)."""
    from sophia.ml.encoder import SentenceEncoder

    return SentenceEncoder.create(models_dir, threads=1)


@pytest.fixture(scope="session")
def settings(worker_id: str, tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Settings:
    """Settings of this worker: its own migrated database, the shared Redis and NATS (its cache in
    a namespace of its own: the same page of another worker's database is another page), its own
    data directory with the shared models in it."""
    import asyncio

    database_url = asyncio.run(_fresh_database(f"sophia_test_{worker_id}"))
    data_dir = tmp_path_factory.mktemp("data")
    (data_dir / "models").symlink_to(models_dir, target_is_directory=True)
    return Settings(
        database_url=database_url,
        redis_url=os.environ["SOPHIA_REDIS_URL"],
        nats_url=os.environ["SOPHIA_NATS_URL"],
        data_dir=data_dir,
        cache_key_prefix=f"sophia:test:{worker_id}:cache:",
        log_json=False,
        log_level="WARNING",
        ml_enabled=False,  # the ML tests turn it on for their own apps: most apps need no model
        ml_threads=1,  # as sentence_encoder
        # Each stream reserves its limit in JetStream's store, and tests make streams of their own
        # side by side: 1 GiB each would make the suite depend on the disk's free space.
        events_max_bytes=64 * 1024 * 1024,
        api_key_cache_ttl_s=0.2,  # what a revoked key waits for, in the tests that revoke one
    )


@pytest.fixture(scope="session")
async def database(settings: Settings):
    from sophia.database import Database

    async with Database(settings) as db:
        yield db


@pytest.fixture(scope="session")
async def api_keys(database) -> dict[str, str]:
    """A secret per scope: {"read": ..., "write": ..., "admin": ...}."""
    from sophia.database import keys

    secrets = {}
    async with database.connection() as connection:
        for scope in keys.SCOPES:
            _, secrets[scope] = await keys.create(connection, f"test-{scope}", scope)
    return secrets


@pytest.fixture(scope="session")
async def app(settings: Settings):
    from sophia.api.app import create_app

    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture(scope="session")
async def client(app, api_keys):
    """An httpx client on the app in-process, authenticated with the admin key."""
    import httpx

    transport = httpx.ASGITransport(app=app)
    headers = {"Authorization": f"Bearer {api_keys['admin']}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://sophia.test", headers=headers) as http:
        yield http


class DatabaseStock:
    """Databases made ahead, in a thread of its own: `take()` hands over one made while earlier
    tests ran and orders the next, so a test waits for `CREATE DATABASE` (0.3 s, mostly the
    server's copy and checkpoint) only when it takes them faster than they are made. The thread
    runs its own event loop: pytest-asyncio cancels what the tests' loop leaves between tests.
    Nothing is made before the first `fill()` or `take()`; what is left unused dies with the test
    server."""

    def __init__(self, prefix: str, *, migrated: bool, ahead: int = 2) -> None:
        self.prefix = prefix
        self.migrated = migrated
        self.ahead = ahead
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"{prefix}-stock")
        self._ordered: collections.deque[Future[str]] = collections.deque()
        self._numbers = itertools.count()
        self._template: str | None = None

    def fill(self) -> None:
        """Order what is missing of the databases made ahead (made in the stock's thread)."""
        while len(self._ordered) <= self.ahead:
            self._ordered.append(self._executor.submit(self._make, next(self._numbers)))

    async def take(self) -> str:
        import asyncio

        self.fill()
        try:
            return await asyncio.wrap_future(self._ordered.popleft())
        except Exception:  # made while a chaos test had PostgreSQL down: make one now (in the
            # stock's thread: one made beside the others could race them for the template)
            return await asyncio.wrap_future(self._executor.submit(self._make, next(self._numbers)))

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

    def _make(self, number: int) -> str:
        import asyncio

        if self.migrated and self._template is None:  # one migrated template, copied for each
            asyncio.run(_fresh_database(f"{self.prefix}_template"))
            self._template = f"{self.prefix}_template"
        return asyncio.run(_create_database(f"{self.prefix}_{number}", self._template))


@pytest.fixture(scope="session")
def blank_database(worker_id: str):
    """A factory of empty databases (not migrated) on the test server: returns a DSN."""
    stock = DatabaseStock(f"sophia_blank_{worker_id}", migrated=False)
    yield stock.take
    stock.close()


@pytest.fixture(scope="session")
def migrated_database(worker_id: str):
    """A factory of databases migrated to the latest schema: returns a DSN. Each is a copy of one
    template per worker migrated once (CREATE DATABASE ... TEMPLATE), a tenth of migrating each.
    (Made from the first use on, not at the session's start: a stock that migrates in its thread
    while an unrelated test runs logs into that test's captured output.)"""
    stock = DatabaseStock(f"sophia_migrated_{worker_id}", migrated=True)
    yield stock.take
    stock.close()


@pytest.fixture
async def own_streams(settings: Settings):
    """Settings whose streams (events, jobs, dead letters) carry a prefix of this test's own, so
    it may read or drain whole streams; every stream under the prefix is deleted afterwards."""
    import uuid

    from streams import delete_streams

    prefix = f"t{uuid.uuid4().hex[:10]}-"
    yield settings.model_copy(update={"events_stream_prefix": prefix})
    assert settings.nats_url
    await delete_streams(settings.nats_url, prefix)


class CapturedLogs(LogCapture):
    """What a module logged, as dicts (`entries`)."""

    def count(self, event: str) -> int:
        return sum(entry["event"] == event for entry in self.entries)

    def events(self, event: str) -> list[dict[str, object]]:
        return [dict(entry) for entry in self.entries if entry["event"] == event]


@pytest.fixture
def logs_of(monkeypatch: pytest.MonkeyPatch) -> Callable[..., CapturedLogs]:
    """`logs_of(module, ...)`: what those modules' `log` logs from now on, at every level.

    The modules get a logger of this test's own: structlog's `capture_logs` misses a module
    logger that an earlier `configure_logging` had already cached (and filters by its level)."""

    def capture(*modules: ModuleType) -> CapturedLogs:
        captured = CapturedLogs()
        logger = structlog.wrap_logger(
            ReturnLogger(),
            processors=[captured],
            wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        )
        for module in modules:
            monkeypatch.setattr(module, "log", logger)
        return captured

    return capture
