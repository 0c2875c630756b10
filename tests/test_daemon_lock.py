"""One daemon per data dir: a second `runnerd serve` on the same data dir refuses to start, naming
the holder's pid, and leaves the first one's jobs alone (#14: two daemons both ran the same jobs)."""

from __future__ import annotations

import signal

import pytest

from tests.helpers import Daemon, base_config

pytestmark = pytest.mark.docker


def test_a_second_daemon_on_the_same_data_dir_refuses_naming_the_holder(tmp_path):
    first = Daemon(tmp_path / "a", base_config()).start()
    second = Daemon(tmp_path / "a", base_config())  # same root, so the same data dir; another port
    try:
        second.start(wait=False)
        assert second.proc is not None
        code = second.proc.wait(timeout=60)
        message = second.log()
        assert code != 0
        assert f"pid {first.proc.pid}" in message and "already uses the data dir" in message
        assert "Traceback" not in message
        # the first one still serves
        first.wait_healthy()
    finally:
        second.stop()  # (on a daemon without the lock it would still be running)
        first.stop()


def test_the_lock_is_released_when_the_holder_is_killed(tmp_path):
    first = Daemon(tmp_path / "b", base_config()).start()
    first.stop(signal.SIGKILL)  # no chance to clean up: the kernel drops the lock with the process
    second = Daemon(tmp_path / "b", base_config()).start()
    second.stop()
