"""Run the whole sample: Redis (found or started), migrations, daphne and the worker.

``python -m project.run`` (what ``make run`` calls). ``PORT`` sets the HTTP
port (default 8000), ``REDIS_URL`` a Redis server to use instead of starting
one. Ctrl-C or SIGTERM stops every process started here, Redis included.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from devtools.redis_servers import RedisServer, ensure_redis

logger = logging.getLogger("project.run")

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PORT = 8000
ASGI_APP = "project.asgi:application"
STOP_TIMEOUT_S = 10.0
POLL_INTERVAL_S = 0.5
STOP_POLL_S = 0.05


class StopRequestedError(Exception):
    """Raised in the main thread when the first SIGINT or SIGTERM arrives."""


class _Stopping:
    """Whether a stop has begun, and whether a second signal asked to hurry it."""

    begun = False
    hurry = False


def _on_signal(signum: int, frame: FrameType | None) -> None:
    """The first signal interrupts the main thread; later ones (a second Ctrl-C
    while the children stop) make :func:`stop_all` kill them at once, rather
    than raising in the middle of stopping them and leaving them running."""
    if _Stopping.begun:
        _Stopping.hurry = True
        return
    _Stopping.begun = True
    raise StopRequestedError(signal.Signals(signum).name)


def _child_env(redis_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env["REDIS_URL"] = redis_url
    env.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _start(argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    # A new session: a Ctrl-C in the terminal reaches this process only, and
    # the children are stopped in order by stop_all().
    return subprocess.Popen(argv, cwd=ROOT, env=env, start_new_session=True)


def stop_all(children: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM every child still running and wait for them; SIGKILL those still
    running after STOP_TIMEOUT_S, or at once after a second signal."""
    _Stopping.begun = True  # from here on a signal hurries the stop, never interrupts it
    for child in children:
        if child.poll() is None:
            child.terminate()
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while any(child.poll() is None for child in children):
        if _Stopping.hurry or time.monotonic() >= deadline:
            for child in children:
                if child.poll() is None:
                    logger.warning("killing pid %d", child.pid)
                    child.kill()
                    child.wait()
            return
        time.sleep(STOP_POLL_S)


def serve(redis_url: str, port: int) -> int:
    """Migrate, then run daphne and the worker until one exits or a signal arrives."""
    env = _child_env(redis_url)
    python = sys.executable
    subprocess.run(
        [python, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True
    )
    children = [
        _start([python, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), ASGI_APP], env),
        _start([python, "manage.py", "runworker_statistic", "--progress-interval", "10"], env),
    ]
    logger.info("chat on http://127.0.0.1:%d/lobby/ , statistics on /stats/", port)
    try:
        while all(child.poll() is None for child in children):
            time.sleep(POLL_INTERVAL_S)
        logger.error("a child exited (codes %s); stopping", [c.poll() for c in children])
        return 1
    except StopRequestedError as exc:
        logger.info("%s received; stopping", exc)
        return 0
    finally:
        stop_all(children)


def main() -> int:
    """Entry point of ``python -m project.run``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    port = int(os.environ.get("PORT", str(DEFAULT_PORT)))
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    server: RedisServer | None = None
    try:
        redis_url, server = ensure_redis()
        logger.info("using Redis at %s", redis_url)
        return serve(redis_url, port)
    except StopRequestedError:
        return 0
    finally:
        if server is not None:
            server.stop()
            logger.info("stopped the redis-server started for this run")


if __name__ == "__main__":
    sys.exit(main())
