"""The upstreams' file: validated by its published JSON Schema, each problem named by file, upstream
and field; variables from the environment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from sophia.mcp_gateway.config import BreakerConfig, ConfigError, UpstreamConfig, load, parse


def configured(name: str, **fields: Any) -> UpstreamConfig:
    """One upstream as the loader makes it from a file."""
    return parse(yaml.safe_dump({"upstreams": [{"name": name, **fields}]}), "test.yaml").upstreams[0]


@pytest.mark.parametrize(
    ("entry", "location", "words"),
    [
        ({"name": "a", "command": "x", "timeout_s": -1}, ("upstreams", 0, "timeout_s"), "field `timeout_s`"),
        ({"name": "a", "command": "x", "url": "http://h/mcp"}, ("upstreams", 0, "command"), "not both"),
        ({"name": "a"}, ("upstreams", 0, "url"), "one of `command`"),
        ({"name": "a", "command": "x", "timeout": 3}, ("upstreams", 0, "timeout"), "not a known field"),
        (
            {"name": "a", "url": "http://h/mcp", "args": ["x"]},
            ("upstreams", 0, "args"),
            "only goes with `command`",
        ),
        ({"name": "a__b", "command": "x"}, ("upstreams", 0, "name"), "field `name`"),
        ({"name": "a", "command": "x", "scope": "root"}, ("upstreams", 0, "scope"), "field `scope`"),
        ({"name": "a", "url": "ftp://h"}, ("upstreams", 0, "url"), "field `url`"),
        (
            {"name": "a", "url": "http://h", "breaker": {"open_s": 0}},
            ("upstreams", 0, "breaker", "open_s"),
            "breaker",
        ),
    ],
)
def test_a_bad_entry_is_refused_naming_the_file_the_upstream_and_the_field(
    entry: dict[str, Any], location: tuple[Any, ...], words: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        parse(yaml.safe_dump({"upstreams": [entry]}), "upstreams.yaml")

    assert refused.value.detail.startswith("upstreams.yaml: upstream ")
    assert words in refused.value.detail
    assert [error.location for error in refused.value.errors] == [location]


def test_duplicate_names_and_prefixes_are_refused() -> None:
    entries = [
        {"name": "a", "command": "x"},
        {"name": "a", "command": "y"},
        {"name": "b", "prefix": "a", "url": "http://h/mcp"},
    ]

    with pytest.raises(ConfigError) as refused:
        parse(yaml.safe_dump({"upstreams": entries}), "upstreams.yaml")

    assert [error.location for error in refused.value.errors] == [
        ("upstreams", 1, "name"),
        ("upstreams", 2, "prefix"),
    ]
    assert "'a' is already the prefix of upstream 'a'" in refused.value.detail


def test_an_unreadable_or_unparsable_file_is_refused_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.yaml: cannot be read"):
        load(tmp_path / "missing.yaml")
    (tmp_path / "broken.yaml").write_text("upstreams: [\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml: not YAML"):
        load(tmp_path / "broken.yaml")


def test_variables_in_headers_and_env_come_from_the_environment() -> None:
    text = "upstreams:\n  - name: a\n    url: http://h/mcp\n    headers: {Authorization: 'Bearer ${TOKEN}'}\n"

    config = parse(text, "u.yaml", environ={"TOKEN": "s3cret"})
    assert config.upstreams[0].headers == {"Authorization": "Bearer s3cret"}
    with pytest.raises(ConfigError, match=r"field `headers.Authorization`: \$\{TOKEN\} is not set"):
        parse(text, "u.yaml", environ={})


def test_the_published_schema_states_the_defaults_the_loader_applies() -> None:
    from sophia.mcp_gateway.config import SCHEMA_PATH

    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    properties = schema["$defs"]["upstream"]["properties"]
    loaded = configured("a", command="x")

    for field in ("timeout_s", "enabled", "idle_s", "scope", "protocol", "attempts", "ping_s"):
        assert properties[field]["default"] == getattr(loaded, field), field
    for field, spec in properties["breaker"]["properties"].items():
        assert spec["default"] == getattr(BreakerConfig(), field), field
    assert loaded.prefix == "a"
    assert loaded.allow_tools is None
    assert loaded.transport == "stdio"


def test_views_name_keys_or_scopes_and_the_tools_they_see() -> None:
    text = """
upstreams: []
views:
  - keys: [ab12cd34]
    tools: [get_record, "files__*"]
  - scopes: [read]
    tools: [pipeline]
"""
    first, second = parse(text, "u.yaml").views
    assert first.applies_to("ab12cd34", "admin")
    assert not first.applies_to("ffffffff", "admin")
    assert first.allows("files__read_file")
    assert not first.allows("files")
    assert second.applies_to("anyone", "read")
    assert not second.allows("get_record")


@pytest.mark.parametrize(
    ("view", "words"),
    [
        ({"tools": ["x"]}, "view #1, field `(entry)`: give `keys` or `scopes`"),
        ({"keys": ["k"], "tools": []}, "view #1, field `tools`"),
        ({"scopes": ["root"], "tools": ["x"]}, "view #1, field `scopes.0`"),
        ({"keys": ["k"], "tools": ["x"], "extra": 1}, "view #1"),
    ],
)
def test_a_bad_view_is_refused_naming_it(view: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse(yaml.safe_dump({"upstreams": [], "views": [view]}), "u.yaml")
    assert words in refused.value.detail
