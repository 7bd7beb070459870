"""Long-lived helper processes (spawned) that run one async job at a time.

The parent stays a pure orchestrator: it starts a job on a free helper,
waits (with a timeout) for the job's ``info`` (e.g. "ready, my channel is
X") and for its result. A helper whose job overruns its hard timeout is
killed by its pid and replaced, so a lost message never hangs the run.

With ``pin``, helper ``i`` runs on CPU ``i mod n`` only (``--pin``): the
processes of a two-process scenario (the ping-pong's pinger and ponger, the
fan-out's two member processes) then always sit on different CPUs, instead of
wherever the kernel's scheduler puts them (see bench/README.md).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import traceback
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

logger = logging.getLogger(__name__)

JobFn = Callable[..., Awaitable[dict[str, Any]]]
SHUTDOWN_TIMEOUT_S = 5.0


class JobError(RuntimeError):
    """A job raised, or overran its hard timeout."""


class Control:
    """The job's side of the pipe to the parent."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def info(self, **payload: Any) -> None:
        """Tell the parent something before the result (typically: ready)."""
        self._conn.send(("info", payload))


def _helper_main(conn: Connection, cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    while True:
        try:
            request = conn.recv()
        except EOFError:
            return
        if request is None:
            return
        fn, params = request
        try:
            result = asyncio.run(fn(Control(conn), **params))
        except BaseException:  # noqa: BLE001 - every failure goes back to the parent
            conn.send(("error", traceback.format_exc()))
        else:
            conn.send(("result", result))


class Helper:
    """One spawned helper process and the parent's end of its pipe."""

    def __init__(
        self, ctx: multiprocessing.context.SpawnContext, index: int, cpu: int | None
    ) -> None:
        self.index = index
        self.cpu = cpu
        self.conn, child = ctx.Pipe()
        self.process: BaseProcess = ctx.Process(
            target=_helper_main, args=(child, cpu), name=f"bench-helper-{index}", daemon=True
        )
        self.process.start()
        child.close()
        self.busy = False

    def kill(self) -> None:
        """Kill this helper's process (by its own handle) and reap it."""
        if self.process.is_alive():
            self.process.kill()
        self.process.join(SHUTDOWN_TIMEOUT_S)
        self.conn.close()


class Job:
    """A job running in a helper."""

    def __init__(self, pool: Pool, helper: Helper, name: str) -> None:
        self._pool = pool
        self._helper = helper
        self.name = name
        self._infos: list[dict[str, Any]] = []
        self._result: dict[str, Any] | None = None

    def _pump(self, timeout_s: float) -> None:
        conn = self._helper.conn
        if not conn.poll(timeout_s):
            self._pool.replace(self._helper)
            msg = f"job {self.name} gave no answer within {timeout_s:.0f} s; helper killed"
            raise JobError(msg)
        kind, payload = conn.recv()
        if kind == "info":
            self._infos.append(payload)
        elif kind == "result":
            self._result = payload
            self._helper.busy = False
        else:
            self._helper.busy = False
            msg = f"job {self.name} failed:\n{payload}"
            raise JobError(msg)

    def info(self, timeout_s: float) -> dict[str, Any]:
        """The job's first ``info`` payload."""
        while not self._infos:
            if self._result is not None:
                msg = f"job {self.name} finished without info"
                raise JobError(msg)
            self._pump(timeout_s)
        return self._infos.pop(0)

    def result(self, timeout_s: float) -> dict[str, Any]:
        """The job's result, waiting at most ``timeout_s`` per message."""
        while self._result is None:
            self._pump(timeout_s)
        return self._result


class Pool:
    """A fixed number of spawned helpers."""

    def __init__(self, size: int, *, pin: bool = False) -> None:
        self._ctx = multiprocessing.get_context("spawn")
        cpus = sorted(os.sched_getaffinity(0)) if pin else []
        self._helpers = [
            Helper(self._ctx, index, cpus[index % len(cpus)] if cpus else None)
            for index in range(size)
        ]

    def start(self, fn: JobFn, **params: Any) -> Job:
        """Run ``fn(control, **params)`` on a free helper."""
        for helper in self._helpers:
            if not helper.busy:
                helper.busy = True
                helper.conn.send((fn, params))
                return Job(self, helper, fn.__name__)
        msg = f"no free helper for {fn.__name__}; pool size {len(self._helpers)}"
        raise JobError(msg)

    def replace(self, helper: Helper) -> None:
        """Kill ``helper`` and put a fresh one in its place."""
        helper.kill()
        self._helpers[helper.index] = Helper(self._ctx, helper.index, helper.cpu)

    def reset(self) -> None:
        """Replace every helper still busy (a job left running after an error)."""
        for helper in list(self._helpers):
            if helper.busy:
                self.replace(helper)

    def close(self) -> None:
        """Stop every helper."""
        for helper in self._helpers:
            if helper.process.is_alive() and not helper.busy:
                helper.conn.send(None)
                helper.process.join(SHUTDOWN_TIMEOUT_S)
            helper.kill()
