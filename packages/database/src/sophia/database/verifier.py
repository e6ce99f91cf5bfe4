"""API keys as callers present them: verified against their stored digest, remembered briefly,
and failed guesses limited per client address. Shared by every process that admits callers (the
API, the real-time service)."""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections import OrderedDict
from typing import Any

from prometheus_client import Counter

from sophia.core.errors import TooManyRequests, Unauthorized, Unavailable
from sophia.database import keys, sessions
from sophia.database.keys import ApiKey
from sophia.database.pool import Database
from sophia.shared.logging import get_logger
from sophia.shared.settings import Settings

KEY_SHAPE = re.compile(r"sk_[0-9a-f]{8}_[A-Za-z0-9_\-]{43}")
"""What `keys.create` issues: `sk_<8 hex>_<43 url-safe base64>`."""

KEY_LOOKUPS = Counter("sophia_api_key_lookups_total", "API keys looked up in PostgreSQL")
PREFIX_READS = Counter(
    "sophia_api_key_prefix_reads_total", "Reads of the active keys' prefixes (while an address is blocked)"
)

EXEMPT_SLOT = "exempt:"
"""An address's second budget, for keys of active prefixes once its first is spent, counted beside
the addresses' own under this name."""

log = get_logger(__name__)

SCOPE_RANK = {"read": 0, "write": 1, "admin": 2}
"""admin may do what write may, write what read may."""


class KeyVerifier:
    """Verifies keys, trusting a verified key from memory for `ttl_s` (so a revocation lands within it).

    While PostgreSQL cannot be asked, a key verified within `ttl_s` + `stale_if_error_s` is still
    trusted: the window in which the cache serves stale reads, which would otherwise be refused
    for want of a key check. A key revoked meanwhile works until PostgreSQL is back.

    Unknown keys cost PostgreSQL at most once each per `miss_ttl_s`, and an address whose keys
    failed `failure_limit` times within `failure_window_s` is answered 429 without a lookup: a
    flood of made-up keys reaches the database a bounded number of times a second.

    Callers of one host share an address, so one caller's flood must not lock the others out. A
    blocked address still has checked: a secret this process verified before (its memory lapsed: a
    real caller's, asked again at most once per `ttl_s` however many send it), and, on a second
    budget of the same size, a key whose public prefix is an active key's (read from PostgreSQL at
    most once per `miss_ttl_s`, only while some address is blocked; with K keys, a made-up key hits
    one about K times in four billion). So an address costs PostgreSQL at most twice
    `failure_limit` lookups a window; a caller that spends both budgets guessing at known prefixes
    holds off only keys this process has never verified."""

    def __init__(
        self,
        database: Database,
        ttl_s: float,
        max_entries: int = 10_000,
        stale_if_error_s: float = 0.0,
        *,
        miss_ttl_s: float = 5.0,
        failure_limit: int = 20,
        failure_window_s: float = 10.0,
    ) -> None:
        self.database = database
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.stale_if_error_s = stale_if_error_s
        self.miss_ttl_s = miss_ttl_s
        self.failure_limit = failure_limit
        self.failure_window_s = failure_window_s
        self._verified: OrderedDict[str, tuple[ApiKey, float]] = OrderedDict()
        self._missed: OrderedDict[str, float] = OrderedDict()
        self._failures: OrderedDict[str, tuple[float, int]] = OrderedDict()
        """Per client address: when its window began, and its failures in it."""
        self._lookups: dict[str, asyncio.Future[ApiKey | None]] = {}
        """The lookup in flight of each key."""
        self._prefixes: frozenset[str] = frozenset()
        self._prefixes_read = -math.inf
        """When the last read of the prefixes began (a key created since is in the next one)."""
        self._prefixes_lookup: asyncio.Future[None] | None = None

    @classmethod
    def from_settings(
        cls, database: Database, settings: Settings, *, stale_if_error_s: float = 0.0
    ) -> KeyVerifier:
        """With the settings' memory, miss and failure limits (what every admitting process uses)."""
        return cls(
            database,
            settings.api_key_cache_ttl_s,
            stale_if_error_s=stale_if_error_s,
            miss_ttl_s=settings.api_key_miss_ttl_s,
            failure_limit=settings.auth_failure_limit,
            failure_window_s=settings.auth_failure_window_s,
        )

    def remembered(self, secret: str) -> ApiKey | None:
        """The key if it was verified less than `ttl_s` ago (memory only; None: ask `verify`)."""
        cached = self._verified.get(secret)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        return None

    async def admit(self, secret: str, address: str) -> ApiKey:
        """`verify` for a request from `address`, refused with 429 while that address is over its
        limits of failed keys (a secret verified here before, and a key of an active prefix while
        the second budget lasts, still pass)."""
        if (key := self.remembered(secret)) is not None:
            return key
        now = time.monotonic()
        if secret not in self._verified and (retry_s := self._blocked(address, now)) is not None:
            if not await self._of_known_prefix(secret):
                raise TooManyRequests(
                    "Too many requests with keys that did not verify from this address; "
                    f"retry in {retry_s} s.",
                    retry_after_s=retry_s,
                )
            address = f"{EXEMPT_SLOT}{address}"
            if (retry_s := self._blocked(address, now)) is not None:
                raise TooManyRequests(
                    "Too many requests with keys that did not verify from this address, those of "
                    f"active keys' prefixes too; retry in {retry_s} s.",
                    retry_after_s=retry_s,
                )
        if secret in self._verified or secret in self._lookups:
            # Verified before and due for a check, or already being looked up for another request
            # (counted once, by that one): not one more guess. Counted only if it fails.
            try:
                return await self.verify(secret)
            except Unauthorized:
                self._count_failure(address, now)
                raise
        # A key never verified is counted as a failure before its lookup is awaited, and taken
        # back if it verifies: concurrent requests from one address see each other's attempts,
        # so a burst of made-up keys in flight at once is held to the limit too.
        window = self._count_failure(address, now)
        try:
            key = await self.verify(secret)
        except Unauthorized:
            raise
        except BaseException:
            self._take_back(address, window)
            raise
        self._take_back(address, window)
        return key

    def _blocked(self, address: str, now: float) -> int | None:
        """Seconds until `address` may try again, None if it is under its limit."""
        began, failed = self._failures.get(address, (now, 0))
        if now - began < self.failure_window_s and failed >= self.failure_limit:
            return max(1, math.ceil(began + self.failure_window_s - now))
        return None

    async def _of_known_prefix(self, secret: str) -> bool:
        """Whether `secret` is shaped as a key and an active key has its prefix."""
        if not KEY_SHAPE.fullmatch(secret):
            return False
        prefix = secret[len(keys.KEY_PREFIX) + 1 : len(keys.KEY_PREFIX) + 9]
        if prefix not in self._prefixes:
            stale = time.monotonic() - self._prefixes_read >= self.miss_ttl_s
            if self._prefixes_lookup is None and stale:  # one read at a time, however many wait
                self._prefixes_lookup = asyncio.ensure_future(self._read_prefixes())
            if self._prefixes_lookup is not None:
                await asyncio.shield(self._prefixes_lookup)  # done even if every waiter goes
        return prefix in self._prefixes

    async def _read_prefixes(self) -> None:
        """The active keys' prefixes into memory; kept as they were when PostgreSQL cannot say (the
        address's 429 stands, and it is asked again `miss_ttl_s` after this read began)."""
        self._prefixes_read = time.monotonic()
        try:
            async with self.database.connection() as connection:
                PREFIX_READS.inc()
                self._prefixes = frozenset(await keys.active_prefixes(connection))
        except Exception as error:  # whatever went wrong, the address's 429 is the answer
            log.warning("key_prefixes_unread", error=repr(error))
        finally:
            self._prefixes_lookup = None

    def _count_failure(self, address: str, now: float) -> float:
        """One more failure for `address`; the start of the window it was counted in."""
        began, failed = self._failures.pop(address, (now, 0))
        if now - began >= self.failure_window_s:
            began, failed = now, 0
        self._failures[address] = (began, failed + 1)
        if len(self._failures) > self.max_entries:
            self._failures.popitem(last=False)
        return began

    def _take_back(self, address: str, window: float) -> None:
        """Undo a failure counted in `window` (the attempt verified, or was not a key's fault)."""
        began, failed = self._failures.get(address, (None, 0))
        if began == window and failed > 0:
            self._failures[address] = (window, failed - 1)

    async def verify(self, secret: str) -> ApiKey:
        """The key of `secret`: an API key, or a dashboard session's secret (which stands for one)."""
        if not (KEY_SHAPE.fullmatch(secret) or sessions.SESSION_SHAPE.fullmatch(secret)):
            raise _refused(secret)  # never spend a pooled connection on a random string
        now = time.monotonic()
        cached = self._verified.get(secret)
        if cached is not None and cached[1] > now:
            return cached[0]
        missed_until = self._missed.get(secret)
        if missed_until is not None and missed_until > now:
            raise _refused(secret)
        lookup = self._lookups.get(secret)
        if lookup is None:  # one lookup per key at a time, however many requests carry it
            lookup = asyncio.ensure_future(self._look_up(secret))
            self._lookups[secret] = lookup
            lookup.add_done_callback(lambda done: self._looked_up(secret, done))
        try:
            key = await asyncio.shield(lookup)
        except Unavailable:
            if cached is not None and now < cached[1] + self.stale_if_error_s:
                return cached[0]
            raise
        if key is None:
            self._verified.pop(secret, None)
            self._remember(self._missed, secret, now + self.miss_ttl_s)
            raise _refused(secret)
        self._missed.pop(secret, None)
        self._remember(self._verified, secret, (key, now + self.ttl_s))
        return key

    def _looked_up(self, secret: str, lookup: asyncio.Future[ApiKey | None]) -> None:
        self._lookups.pop(secret, None)
        if not lookup.cancelled():
            lookup.exception()  # retrieved: its callers may all have gone

    async def _look_up(self, secret: str) -> ApiKey | None:
        async with self.database.connection() as connection:
            KEY_LOOKUPS.inc()
            if secret.startswith(sessions.SESSION_PREFIX):
                return await sessions.find_active(connection, secret)
            return await keys.find_active(connection, secret)

    def forget(self, secret: str) -> None:
        """Trust `secret` no more from memory (a session ended here; other processes let go of it
        within `ttl_s`)."""
        self._verified.pop(secret, None)

    def _remember(self, memory: OrderedDict[str, Any], secret: str, value: Any) -> None:
        memory[secret] = value
        memory.move_to_end(secret)
        if len(memory) > self.max_entries:
            memory.popitem(last=False)


def _refused(secret: str) -> Unauthorized:
    if secret.startswith(sessions.SESSION_PREFIX):
        return Unauthorized("The session has expired or was ended (or its key revoked): sign in again.")
    return Unauthorized("The API key is not valid or has been revoked.")


def bearer_secret(header: str) -> str:
    """The key of an `Authorization: Bearer <key>` header; `Unauthorized` saying what is wrong."""
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        if header:
            raise Unauthorized("The Authorization header must be `Bearer <key>`.")
        raise Unauthorized("Send an API key as `Authorization: Bearer <key>`.")
    return secret.strip()
