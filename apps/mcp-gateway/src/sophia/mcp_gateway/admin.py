"""The upstreams over HTTP, for an admin key: list them with their state, add one, disable,
enable or remove one. The upstreams file stays the one source of truth: each change is checked as
the whole new file would be, written in place of the old one (atomically; comments are not kept),
and applied at once, as the watcher would apply it a second later.

| route | does |
| --- | --- |
| `GET /admin/upstreams` | each upstream's configuration (no headers or env; url, args masked) and state |
| `POST /admin/upstreams` | add one (the body: one entry, as in the file) |
| `POST /admin/upstreams/{name}:disable`, `:enable` | switch one off or on |
| `DELETE /admin/upstreams/{name}` | remove one |
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson
import yaml
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sophia.mcp_gateway.auth import CALLER_KEY
from sophia.mcp_gateway.config import VARIABLE, ConfigError, GatewayConfig, parse
from sophia.mcp_gateway.providers import Caller
from sophia.mcp_gateway.upstreams import Upstreams
from sophia.shared.files import write_private
from sophia.shared.urls import without_password

MAX_BODY = 65_536
PREFIX = "/admin/upstreams"
MASK = "***"
SECRET_NAME = re.compile(
    r"(?:^|[-_.])(?:token|secret|password|passwd|pwd|pass|key|apikey|auth|authorization|credentials?|"
    r"bearer|cookie|session|signature|sig|pat)(?:$|[-_.])",
    re.IGNORECASE,
)
"""A flag or variable name (its words split at `-`, `_` or `.`) whose value is a secret: `--token`,
`--api-key`, `--client-secret`, `GITHUB_PERSONAL_ACCESS_TOKEN`, `DB_PASSWORD`..."""
HEADER_FLAGS = {"--header", "--headers", "-H"}
"""Flags whose value is an HTTP header (`Name: value`, as `mcp-remote` takes them): the value is masked."""


def _json(body: object, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


TITLES = {
    400: "Bad request",
    403: "Forbidden",
    404: "Not found",
    409: "Conflict",
    413: "Too large",
    422: "Invalid",
}


def _refused(status: int, detail: str, **more: object) -> Response:
    return _json({"error": TITLES.get(status, "Error"), "detail": detail, **more}, status)


def shown_url(url: str) -> str:
    """`url` as the admin API shows it: its password masked (`without_password`), a user with no
    password (often a token) masked, and every query value and fragment masked (`?token=***`)."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if parts.username is not None and not parts.password:  # `TOKEN@host`, `TOKEN:@host`
            netloc = f"{MASK}@{netloc.rpartition('@')[2]}"
        query = urlencode(
            [(name, MASK) for name, _ in parse_qsl(parts.query, keep_blank_values=True)], safe="*"
        )
        fragment = MASK if parts.fragment else ""
        return without_password(urlunsplit((parts.scheme, netloc, parts.path, query, fragment)))
    except ValueError:  # not a URL that can be taken apart (a port out of range...): not shown
        return MASK


CAMEL_WORD = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def _secret_name(name: str) -> bool:
    """Whether a flag or variable name says its value is a secret; camelCase words count as words
    (`--accessToken`, `--clientSecret`: Node servers' flags)."""
    return bool(SECRET_NAME.search(CAMEL_WORD.sub("_", name.lstrip("-"))))


def shown_args(args: list[Any]) -> list[Any]:
    """A command's `args` as the admin API shows them: the value after a secret-named flag
    (`--token X`, `--api-key=X`), a secret-named assignment (`API_TOKEN=X`), a header's value
    (`--header "Authorization: X"`) and a URL's credentials masked (see docs/mcp.md)."""
    shown: list[Any] = []
    previous = ""
    for arg in args:
        if not isinstance(arg, str):
            shown.append(arg)
            continue
        name, equals, value = arg.partition("=")
        if previous in HEADER_FLAGS:
            header, colon, _ = arg.partition(":")
            shown.append(f"{header}: {MASK}" if colon else MASK)
        elif equals and name in HEADER_FLAGS:  # --header=Authorization: Bearer X
            header, colon, _ = value.partition(":")
            shown.append(f"{name}={header}: {MASK}" if colon else f"{name}={MASK}")
        elif previous.startswith("-") and _secret_name(previous):
            shown.append(MASK)
        elif equals and _secret_name(name):
            shown.append(f"{name}={MASK}")
        elif equals and "://" in value:  # --url=..., DATABASE_URL=...
            shown.append(f"{name}={shown_url(value)}")
        elif "://" in arg:
            shown.append(shown_url(arg))
        else:
            shown.append(arg)
        previous = arg if arg.startswith("-") and not equals else ""
    return shown


def shown(entry: dict[str, Any]) -> dict[str, Any]:
    """An upstream's entry as the admin API shows it: no headers or env (secrets), and the
    credentials in its url and args masked."""
    visible = {key: value for key, value in entry.items() if key not in ("headers", "env")}
    if isinstance(visible.get("url"), str):
        visible["url"] = shown_url(visible["url"])
    if isinstance(visible.get("args"), list):
        visible["args"] = shown_args(visible["args"])
    return visible


def _entries(document: dict[str, Any]) -> list[dict[str, Any]]:
    listed = document.get("upstreams")
    return [entry for entry in listed if isinstance(entry, dict)] if isinstance(listed, list) else []


def routes(
    path: Path | None,
    upstreams: Callable[[], Upstreams | None],
    apply: Callable[[GatewayConfig], Awaitable[None]],
) -> list[Route]:
    """The admin routes over the upstreams file at `path` (None: the gateway has none)."""
    editing = asyncio.Lock()  # one change at a time: each reads the file the last one wrote

    def guard(request: Request) -> Response | None:
        caller = request.scope.get(CALLER_KEY)
        if not isinstance(caller, Caller) or caller.scope != "admin":
            return _refused(403, "The upstreams are managed with an admin key.")
        if path is None:
            return _refused(409, "The gateway runs without an upstreams file (SOPHIA_MCP_UPSTREAMS_FILE).")
        return None

    def document() -> dict[str, Any]:
        """The file as it is now; `Unusable` if it cannot be edited (unreadable, not YAML, or not
        an object whose `upstreams` is a list: a hand edit the watcher did not apply)."""
        assert path is not None
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except (OSError, UnicodeDecodeError) as error:
            raise Unusable(f"{path} cannot be read ({getattr(error, 'strerror', None) or error}).") from None
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)  # where, not the line's text: it may hold a secret
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
            raise Unusable(f"{path} is not valid YAML{where}.") from None
        if not isinstance(loaded, dict) or not isinstance(loaded.setdefault("upstreams", []), list):
            raise Unusable(f"{path} is not an object with an `upstreams` list.")
        return loaded

    async def write(changed: dict[str, Any]) -> Response | None:
        """Check, write and apply the changed file; a refusal, or None when done."""
        assert path is not None
        text = yaml.safe_dump(changed, sort_keys=False)
        try:
            config = parse(text, str(path))
        except ConfigError as refused:
            errors = [
                {"location": list(error.location), "message": error.message} for error in refused.errors
            ]
            return _refused(422, refused.detail, errors=errors)
        write_private(path, text)  # its headers and env may hold secrets
        await apply(config)
        return None

    async def listed(request: Request) -> Response:
        if (refused := guard(request)) is not None:
            return refused
        running = upstreams()
        states = {upstream.name: upstream.status() for upstream in (running.providers() if running else [])}
        entries = [
            {
                **shown(entry),
                "state": states.get(entry.get("name", ""), {"session": "off"}),
            }
            for entry in _entries(document())
        ]
        return _json({"source": str(path), "upstreams": entries})

    async def added(request: Request) -> Response:
        if (refused := guard(request)) is not None:
            return refused
        body = await request.body()
        if len(body) > MAX_BODY:
            return _refused(413, f"An upstream entry is at most {MAX_BODY} bytes.")
        try:
            entry = _loads(body)
        except ValueError:
            return _refused(400, "The body is one upstream entry as JSON; this is not valid JSON.")
        if not isinstance(entry, dict):
            return _refused(400, "The body is one upstream entry: a JSON object.")
        if (refused := _operators_only(entry)) is not None:
            return refused
        async with editing:
            changed = document()
            changed.setdefault("upstreams", [])
            if any(
                isinstance(old, dict) and old.get("name") == entry.get("name") for old in changed["upstreams"]
            ):
                return _refused(409, f"An upstream named {entry.get('name')!r} exists; remove it first.")
            changed["upstreams"].append(entry)
            return await write(changed) or _json({"added": entry.get("name")}, 201)

    async def switched(request: Request) -> Response:
        if (refused := guard(request)) is not None:
            return refused
        name, _, action = request.path_params["target"].partition(":")
        if action not in ("disable", "enable"):
            return _refused(404, "Use /admin/upstreams/<name>:disable or :enable.")
        async with editing:
            changed = document()
            entry = next((old for old in _entries(changed) if old.get("name") == name), None)
            if entry is None:
                return _refused(404, f"No upstream named {name!r}.")
            entry["enabled"] = action == "enable"
            return await write(changed) or _json({"name": name, "enabled": entry["enabled"]})

    async def removed(request: Request) -> Response:
        if (refused := guard(request)) is not None:
            return refused
        name = request.path_params["target"]
        async with editing:
            changed = document()
            kept = [old for old in _entries(changed) if old.get("name") != name]
            if len(kept) == len(_entries(changed)):
                return _refused(404, f"No upstream named {name!r}.")
            changed["upstreams"] = kept
            return await write(changed) or _json({"removed": name})

    return [
        Route(PREFIX, _usable(listed), methods=["GET"]),
        Route(PREFIX, _usable(added), methods=["POST"]),
        Route(PREFIX + "/{target}", _usable(switched), methods=["POST"]),
        Route(PREFIX + "/{target}", _usable(removed), methods=["DELETE"]),
    ]


def _loads(body: bytes) -> Any:
    """The JSON document `body`; `ValueError` if it is none. orjson refuses an integer past 64 bits
    (valid JSON, which the entry's check then names as the field it is); `json` reads it."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return json.loads(body, parse_constant=_no_constant)  # a big integer, or not JSON at all


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _operators_only(entry: dict[str, Any]) -> Response | None:
    """What an admin key may not add over HTTP, only whoever runs the gateway in its file: an
    upstream that runs a command on the gateway's host, and a `${NAME}`, which the gateway fills
    from its own environment (a key could send any of its variables to a server of its choosing)."""
    if "command" in entry:
        detail = (
            "An upstream that runs a command on the gateway's host (stdio) is added to the upstreams "
            "file by whoever runs the gateway, not over the API; over the API, give a `url`."
        )
        return _refused(422, detail, errors=[{"location": ["command"], "message": "not over the API"}])
    for field, value in _headers_of(entry):
        if isinstance(value, str) and VARIABLE.search(value):
            detail = (
                f"`{field}` names a variable of the gateway's environment (`${{NAME}}`): only the "
                "upstreams file, written by whoever runs the gateway, may; over the API, give the value."
            )
            location = field.split(".", 1)
            return _refused(
                422, detail, errors=[{"location": location, "message": "no `${NAME}` over the API"}]
            )
    return None


def _headers_of(entry: dict[str, Any]) -> list[tuple[str, object]]:
    headers = entry.get("headers")
    return (
        [(f"headers.{name}", value) for name, value in headers.items()] if isinstance(headers, dict) else []
    )


class Unusable(Exception):
    """The upstreams file cannot be read or edited as it is now; the message says why."""


def _usable(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """`handler`, answering 409 naming the file when the file is not usable now."""

    async def handle(request: Request) -> Response:
        try:
            return await handler(request)
        except Unusable as unusable:
            return _refused(409, f"{unusable} Fix or restore it, then try again.")

    return handle
