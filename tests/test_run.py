"""``make run`` (``python -m project.run``): Ctrl-C stops every process it started."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from devtools.redis_servers import find_free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 60.0
EXIT_TIMEOUT_S = 30.0
# Between two presses of Ctrl-C: the second lands while the children stop.
PRESS_GAP_S = 0.02


def children_of(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        stat = (Path("/proc") / str(pid) / "stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status) == 200
    except (urllib.error.URLError, OSError):
        return False


def start_sample(
    tmp_path: Path, redis_url: str, prefix: str
) -> tuple[subprocess.Popen[bytes], str]:
    port = find_free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "REDIS_URL": redis_url,
        "CHANNEL_LAYER_PREFIX": prefix,
        "DJANGO_DB_PATH": str(tmp_path / "db.sqlite3"),
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "PYTHONUNBUFFERED": "1",
    }
    # Output to a file, not a pipe: the children inherit it, and reading a
    # pipe to its end would wait for them too.
    with (tmp_path / "run.log").open("wb") as log:
        run = subprocess.Popen(
            [sys.executable, "-m", "project.run"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/lobby/"
    deadline = time.monotonic() + START_TIMEOUT_S
    while not answers(url):
        if run.poll() is not None or time.monotonic() > deadline:
            run.kill()
            run.wait()
            pytest.fail(f"the sample did not start:\n{(tmp_path / 'run.log').read_text()}")
        time.sleep(0.2)
    return run, url


@pytest.mark.parametrize("presses", [1, 2], ids=["ctrl-c", "ctrl-c twice"])
def test_ctrl_c_stops_daphne_and_the_worker(
    tmp_path: Path, redis_url: str, prefix: str, presses: int
) -> None:
    run, url = start_sample(tmp_path, redis_url, prefix)
    children = children_of(run.pid)
    try:
        assert len(children) == 2, children  # daphne and runworker_statistic
        for _ in range(presses):
            run.send_signal(signal.SIGINT)
            time.sleep(PRESS_GAP_S)
        run.wait(timeout=EXIT_TIMEOUT_S)
        output = (tmp_path / "run.log").read_text()
        # Nothing this run started outlives it (a second Ctrl-C used to
        # interrupt the stop and leave the children running on their own).
        assert [pid for pid in children if alive(pid)] == [], output
        assert run.returncode == 0, output
        assert not answers(url)
    finally:
        for pid in children:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        if run.poll() is None:
            run.kill()
            run.wait()
