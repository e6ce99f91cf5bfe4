"""SupervisedProcess: readiness, stubborn children, failed restarts, and death with the parent."""

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from sophia.engines.process import SupervisedProcess

IGNORES_SIGTERM = [
    sys.executable,
    "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ignoring', flush=True);"
    " time.sleep(120)",
]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def always_ready() -> bool:
    return True


async def test_a_child_that_ignores_the_stop_signal_is_killed_after_the_timeout(tmp_path):
    log = tmp_path / "log"

    async def ignoring_sigterm() -> bool:  # ready once its handler is installed
        return log.exists() and "ignoring" in log.read_text()

    process = SupervisedProcess("stubborn", IGNORES_SIGTERM, ignoring_sigterm, log)
    await process.start()
    pid = process.pid
    await process.stop(timeout_s=0.05)  # it never ends by itself: any timeout shows the kill
    assert not alive(pid)


async def test_a_child_that_exits_before_it_is_ready_fails_start_with_its_log_named(tmp_path):
    async def never_ready() -> bool:
        return False

    argv = [sys.executable, "-c", "raise SystemExit(3)"]
    process = SupervisedProcess("crasher", argv, never_ready, tmp_path / "crasher.log")
    with pytest.raises(RuntimeError, match=r"exited with 3; see .*crasher\.log"):
        await process.start()


async def test_a_child_never_ready_fails_start_after_the_start_timeout(tmp_path):
    async def never_ready() -> bool:
        return False

    process = SupervisedProcess("slow", IGNORES_SIGTERM, never_ready, tmp_path / "log", start_timeout_s=0.1)
    try:
        with pytest.raises(TimeoutError, match="not ready after"):
            await process.start()
    finally:
        await process.stop(timeout_s=0.5)


@pytest.mark.chaos
async def test_a_failed_restart_is_killed_and_retried_until_the_child_is_ready_again(tmp_path):
    process: SupervisedProcess

    async def never_ready_on_the_first_restart() -> bool:
        return process.restarts != 1

    argv = [sys.executable, "-c", "import time; time.sleep(120)"]
    process = SupervisedProcess(
        "flaky", argv, never_ready_on_the_first_restart, tmp_path / "log", start_timeout_s=0.3
    )
    await process.start()
    try:
        process.kill()
        async with asyncio.timeout(30):
            while process.restarts < 2 or not alive(process.pid):
                await asyncio.sleep(0.05)
        assert process.restarts == 2  # the hung first restart was killed, the second one runs
        assert await process.ready()
    finally:
        await process.stop(timeout_s=2)


@pytest.mark.chaos
def test_engines_die_with_a_parent_killed_by_sigkill(tmp_path):
    """`kill -9` of the supervising process leaves no engine behind (PR_SET_PDEATHSIG)."""
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        from pathlib import Path
        from sophia.engines.valkey import EmbeddedValkey

        async def main():
            valkey = EmbeddedValkey(Path({str(tmp_path)!r}))
            await valkey.start()
            print(valkey.process.pid, flush=True)
            await asyncio.sleep(120)

        asyncio.run(main())
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        engine_pid = next(int(line) for line in parent.stdout if line.strip().isdigit())
        assert alive(engine_pid)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while alive(engine_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(engine_pid)
    finally:
        if parent.poll() is None:
            parent.kill()


def test_free_ports_are_distinct_and_nothing_listens_on_them():
    import socket

    from sophia.engines.process import free_ports

    ports = free_ports(30)
    assert len(set(ports)) == 30
    for port in ports[:3]:
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0


async def test_killing_a_child_that_already_stopped_does_nothing(tmp_path):
    process = SupervisedProcess(
        "sleeper", [sys.executable, "-c", "import time; time.sleep(60)"], always_ready, tmp_path / "log"
    )
    process.kill()  # never started: nothing to kill
    await process.start()
    pid = process.pid
    await process.stop()
    process.kill()
    assert process.pid == pid
    assert process.restarts == 0
    assert not alive(pid)


def test_without_root_engines_run_as_the_current_user(monkeypatch):
    from sophia.engines.process import unprivileged_user

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert unprivileged_user() is None


@pytest.mark.skipif(os.geteuid() != 0, reason="creates a system user: root only")
def test_under_root_a_missing_user_is_created_and_handed_a_whole_tree(tmp_path):
    import pwd
    import uuid

    from sophia.engines.process import chown_tree, unprivileged_user

    name = f"sophia-t{uuid.uuid4().hex[:8]}"
    try:
        assert unprivileged_user(name) == name
        entry = pwd.getpwnam(name)
        (tmp_path / "tree" / "nested").mkdir(parents=True)
        (tmp_path / "tree" / "nested" / "file").write_text("data")
        chown_tree(tmp_path / "tree", name)
        owners = {path.stat().st_uid for path in [tmp_path / "tree", *(tmp_path / "tree").rglob("*")]}
        assert owners == {entry.pw_uid}
        assert unprivileged_user(name) == name  # exists now: used as it is
    finally:
        subprocess.run(["userdel", name], check=False, capture_output=True)
