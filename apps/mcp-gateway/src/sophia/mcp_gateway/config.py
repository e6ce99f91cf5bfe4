"""The upstream MCP servers, from one YAML file checked against `upstreams.schema.json`.

```yaml
upstreams:
  - name: files                  # tools listed as files__read_file, files__list_directory, ...
    command: npx
    args: ["-y", "@modelcontextprotocol/server-filesystem", "/srv/shared"]
    idle_s: 120
    allow_tools: [read_file, list_directory]
  - name: tickets
    prefix: jira                 # tools listed as jira__<tool>
    url: https://mcp.example.com/mcp
    headers: {Authorization: "Bearer ${JIRA_TOKEN}"}
    timeout_s: 10
    scope: write
```

A client sees an upstream's tool `<prefix>__<tool>`: `__` is valid in MCP tool names
(`[A-Za-z0-9._-]`) and never occurs in a prefix, so the first `__` of a name ends its prefix.
Every problem is reported with the file, the upstream and the field; two upstreams may not share
a name or a prefix. `ConfigWatcher` reads the file again when it changes and keeps the last good
configuration while the file is invalid.
"""

from __future__ import annotations

import asyncio
import fnmatch
import functools
import hashlib
import json
import os
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any, Literal

import jsonschema
import yaml

from sophia.core.errors import FieldError, Invalid
from sophia.shared.logging import get_logger

log = get_logger(__name__)

SCHEMA_PATH = Path(__file__).with_name("upstreams.schema.json")
SEPARATOR = "__"
"""Between an upstream's prefix and its tool's own name."""
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
"""`${NAME}` in an entry's `env`, `headers` (or `args`): the gateway's variable NAME."""


class ConfigError(Invalid):
    """The upstreams file cannot be used; `errors` locate each problem (`upstreams`, index, field)."""


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    failure_rate: float = 0.5
    window: int = 20
    min_calls: int = 5
    open_s: float = 5.0


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    """One upstream MCP server: a stdio `command` or a Streamable HTTP `url`."""

    name: str
    prefix: str
    command: str | None = None
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict, repr=False)  # may hold secrets: kept out of logs
    cwd: str | None = None
    url: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    timeout_s: float = 30.0
    enabled: bool = True
    idle_s: float = 300.0
    allow_tools: frozenset[str] | None = None
    scope: str = "read"
    protocol: str = "auto"
    attempts: int = 3
    ping_s: float = 30.0
    breaker: BreakerConfig = field(default_factory=BreakerConfig)

    @property
    def transport(self) -> Literal["stdio", "http"]:
        return "stdio" if self.command is not None else "http"


@dataclass(frozen=True, slots=True)
class ViewConfig:
    """The tools (shell-style patterns on their names) the callers it names may see and call."""

    tools: tuple[str, ...]
    keys: frozenset[str] = frozenset()
    """Key prefixes, or JWT subjects."""
    scopes: frozenset[str] = frozenset()

    def applies_to(self, prefix: str, scope: str) -> bool:
        return prefix in self.keys or scope in self.scopes

    def allows(self, tool: str) -> bool:
        return any(fnmatch.fnmatchcase(tool, pattern) for pattern in self.tools)


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    upstreams: tuple[UpstreamConfig, ...] = ()
    views: tuple[ViewConfig, ...] = ()
    source: str = "<none>"
    digest: str = ""
    """SHA-256 of the file's bytes: an unchanged file is not applied twice."""

    def enabled(self) -> dict[str, UpstreamConfig]:
        return {upstream.name: upstream for upstream in self.upstreams if upstream.enabled}


@functools.cache
def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text()))


def load(path: Path, environ: Mapping[str, str] = os.environ) -> GatewayConfig:
    """The file at `path`, validated; `ConfigError` naming the file, the upstream and the field."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"{path}: cannot be read ({error.strerror})") from None
    return parse(data, str(path), environ)


def parse(data: bytes | str, source: str, environ: Mapping[str, str] = os.environ) -> GatewayConfig:
    raw = data.encode() if isinstance(data, str) else data
    try:
        document = yaml.safe_load(raw)
    except yaml.YAMLError as error:
        raise ConfigError(f"{source}: not YAML: {error}") from None
    if document is None:
        document = {"upstreams": []}
    problems = [_located(error, document) for error in _validator().iter_errors(document)]
    if not problems:
        upstreams = tuple(
            _upstream(entry, index, environ, problems) for index, entry in enumerate(document["upstreams"])
        )
        problems.extend(_duplicates(upstreams))
    if problems:
        problems.sort(key=lambda problem: [str(part) for part in problem.location])
        lines = "; ".join(problem.message for problem in problems)
        raise ConfigError(f"{source}: {lines}", problems)
    views = tuple(
        ViewConfig(tuple(view["tools"]), frozenset(view.get("keys", ())), frozenset(view.get("scopes", ())))
        for view in document.get("views", ())
    )
    return GatewayConfig(upstreams, views, source, hashlib.sha256(raw).hexdigest())


def _label(document: Any, index: int) -> str:
    entry = document["upstreams"][index] if isinstance(document, dict) else None
    name = entry.get("name") if isinstance(entry, dict) else None
    return f"upstream {name!r}" if isinstance(name, str) else f"upstream #{index + 1}"


def _located(error: jsonschema.ValidationError, document: Any) -> FieldError:
    """A schema violation as `upstream 'x', field `y`: what`, whatever keyword failed."""
    path = list(error.absolute_path)
    if path[:1] == ["views"] and len(path) >= 2:
        where = ".".join(str(part) for part in path[2:]) or "(entry)"
        message = "give `keys` or `scopes`" if error.validator == "anyOf" else error.message
        return FieldError(tuple(path), f"view #{int(path[1]) + 1}, field `{where}`: {message}")
    if len(path) < 2:
        return FieldError(tuple(path), f"{'.'.join(map(str, path)) or 'the document'}: {error.message}")
    index = int(path[1])
    fields = [str(part) for part in path[2:]]
    instance = error.instance if isinstance(error.instance, dict) else {}
    message = error.message
    if error.validator == "required":
        fields += [name for name in error.validator_value if name not in instance][:1]
        message = "is required"
    elif error.validator == "additionalProperties":
        known = error.schema.get("properties", {})
        fields += sorted(name for name in instance if name not in known)[:1]
        message = "is not a known field"
    elif error.validator == "dependentRequired":
        name, needed = next((key, value) for key, value in error.validator_value.items() if key in instance)
        fields.append(name)
        message = f"only goes with `{needed[0]}`"
    elif error.validator == "oneOf" and not fields:
        fields = ["command" if "command" in instance else "url"]
        message = "give one of `command` (stdio) or `url` (Streamable HTTP), not both, not neither"
    elif error.validator in ("maximum", "minimum", "exclusiveMinimum"):
        bound = {"maximum": "at most", "minimum": "at least", "exclusiveMinimum": "more than"}
        message = f"must be {bound[str(error.validator)]} {error.validator_value}"
    elif error.validator == "pattern" and fields[:1] == ["headers"]:
        name = fields[1] if len(fields) > 1 else repr(error.instance)
        message = (
            f"the value of header {name} holds a line break or a NUL, which HTTP cannot carry"
            if len(fields) > 1
            else f"{name} is no header name (letters, digits and !#$%&'*+.^_`|~-)"
        )
    where = ".".join(fields) or "(entry)"
    return FieldError(("upstreams", index, *fields), f"{_label(document, index)}, field `{where}`: {message}")


def _expand(
    entry: dict[str, Any], index: int, key: str, environ: Mapping[str, str], problems: list[FieldError]
) -> Mapping[str, str]:
    """`entry[key]` (env or headers) with each `${NAME}` replaced by the gateway's variable."""
    expanded: dict[str, str] = {}
    for item, value in entry.get(key, {}).items():
        for name in VARIABLE.findall(value):
            if name not in environ:
                message = f"upstream {entry['name']!r}, field `{key}.{item}`: ${{{name}}} is not set"
                problems.append(FieldError(("upstreams", index, key, item), message))
        expanded[item] = VARIABLE.sub(lambda match: environ.get(match.group(1), ""), value)
    return MappingProxyType(expanded)


_PLAIN = ("command", "cwd", "url", "enabled", "scope", "protocol", "attempts")
_SECONDS = ("timeout_s", "idle_s", "ping_s")


def _upstream(
    entry: dict[str, Any], index: int, environ: Mapping[str, str], problems: list[FieldError]
) -> UpstreamConfig:
    """A validated entry as its dataclass; what the entry leaves out takes the dataclass's default."""
    options: dict[str, Any] = {key: entry[key] for key in _PLAIN if key in entry}
    options.update((key, float(entry[key])) for key in _SECONDS if key in entry)
    if "allow_tools" in entry:
        options["allow_tools"] = frozenset(entry["allow_tools"])
    breaker: dict[str, Any] = dict(entry.get("breaker", {}))
    breaker.update((key, float(breaker[key])) for key in ("failure_rate", "open_s") if key in breaker)
    return UpstreamConfig(
        name=entry["name"],
        prefix=entry.get("prefix", entry["name"]),
        args=tuple(entry.get("args", ())),
        env=_expand(entry, index, "env", environ, problems),
        headers=_expand(entry, index, "headers", environ, problems),
        breaker=BreakerConfig(**breaker),
        **options,
    )


def _duplicates(upstreams: tuple[UpstreamConfig, ...]) -> list[FieldError]:
    problems = []
    names: dict[str, int] = {}
    prefixes: dict[str, UpstreamConfig] = {}
    for index, upstream in enumerate(upstreams):
        first = names.setdefault(upstream.name, index)
        if first != index:
            message = f"{upstream.name!r} names upstreams #{first + 1} and #{index + 1}"
            problems.append(
                FieldError(("upstreams", index, "name"), f"upstream #{index + 1}, field `name`: {message}")
            )
            continue
        owner = prefixes.setdefault(upstream.prefix, upstream)
        if owner is not upstream:
            message = f"{upstream.prefix!r} is already the prefix of upstream {owner.name!r}"
            problems.append(
                FieldError(
                    ("upstreams", index, "prefix"), f"upstream {upstream.name!r}, field `prefix`: {message}"
                )
            )
    return problems


class ConfigWatcher:
    """Reads the upstreams file again when its content changes (polled, by SHA-256) and hands each
    new valid configuration to `on_change`; an invalid or missing file is logged once and the old
    configuration kept.

    Use as ``async with ConfigWatcher(path, on_change, current):``; `check()` polls once."""

    def __init__(
        self,
        path: Path,
        on_change: Callable[[GatewayConfig], Awaitable[None]],
        current: GatewayConfig,
        *,
        poll_s: float = 1.0,
        environ: Mapping[str, str] = os.environ,
    ) -> None:
        self.path = path
        self.on_change = on_change
        self.current = current
        self.poll_s = poll_s
        self.environ = environ
        self._seen_digest = current.digest
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> ConfigWatcher:
        self._task = asyncio.create_task(self._watch(), name=f"watch-{self.path.name}")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            await self.check()

    def _read(self) -> bytes | None:
        try:
            return self.path.read_bytes()
        except OSError:
            return None

    async def check(self) -> bool:
        """Read the file once; True if it held a new valid configuration, now applied."""
        data = await asyncio.to_thread(self._read)  # a few kB: hashing each poll beats trusting mtime
        digest = hashlib.sha256(data).hexdigest() if data is not None else "missing"
        if digest == self._seen_digest:
            return False
        self._seen_digest = digest
        if data is None:
            log.error("mcp_upstreams_unreadable", file=str(self.path), kept=self.current.digest[:12])
            return False
        if digest == self.current.digest:
            return False  # back to what is applied
        try:
            config = parse(data, str(self.path), self.environ)
        except ConfigError as error:
            log.error(
                "mcp_upstreams_invalid",
                file=str(self.path),
                error=error.detail,
                kept=self.current.digest[:12],
            )
            return False
        try:
            await self.on_change(config)
        except Exception as error:  # the watcher outlives a failed apply; the next change tries again
            log.exception("mcp_upstreams_apply_failed", file=str(self.path), error=repr(error))
            self._seen_digest = self.current.digest
            return False
        self.current = config
        log.info("mcp_upstreams_reloaded", file=str(self.path), upstreams=[u.name for u in config.upstreams])
        return True
