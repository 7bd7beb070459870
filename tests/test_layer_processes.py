"""Separate OS processes: a normal channel shared by two, a process-specific channel across two."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.layer_helpers import LayerFactory, receive_within, receives_nothing

HELPER = Path(__file__).with_name("layer_helpers.py")
REPO_ROOT = Path(__file__).resolve().parent.parent
MESSAGE_COUNT = 10_000
READY_TIMEOUT_S = 30.0
RESULT_TIMEOUT_S = 60.0


class Child:
    """A ``layer_helpers.py`` child process that receives numbered messages until idle."""

    def __init__(self, *args: str) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])]
        )
        self.process = subprocess.Popen(
            [sys.executable, str(HELPER), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )

    async def line(self, timeout_s: float) -> dict[str, Any]:
        """The child's next JSON line."""
        assert self.process.stdout is not None
        text = await asyncio.wait_for(asyncio.to_thread(self.process.stdout.readline), timeout_s)
        if not text:
            stderr = self.process.stderr.read() if self.process.stderr else ""
            pytest.fail(f"child exited with {self.process.wait()}: {stderr[-2000:]}")
        result: dict[str, Any] = json.loads(text)
        return result

    def stop(self) -> None:
        """Kill the child (by its own pid) if it is still running."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


async def test_two_processes_share_a_normal_channel_each_message_exactly_once(
    make_layer: LayerFactory, redis_url: str, prefix: str
) -> None:
    channel = "statistic"
    children = [Child("receive", redis_url, prefix, channel, "--idle-s", "2") for _ in range(2)]
    try:
        for child in children:
            assert (await child.line(READY_TIMEOUT_S))["ready"] == channel
        # Let both children block in receive() before the first message.
        await asyncio.sleep(0.5)
        sender = make_layer(capacity=MESSAGE_COUNT + 1)
        for start in range(0, MESSAGE_COUNT, 100):
            await asyncio.gather(
                *(
                    sender.send(channel, {"type": "statistic", "n": n})
                    for n in range(start, start + 100)
                )
            )
        results = [(await child.line(RESULT_TIMEOUT_S))["received"] for child in children]
    finally:
        for child in children:
            child.stop()
    first, second = results
    everything = first + second
    duplicates = len(everything) - len(set(everything))
    missing = set(range(MESSAGE_COUNT)) - set(everything)
    assert duplicates == 0, f"{duplicates} messages were delivered twice"
    assert not missing, f"{len(missing)} messages were lost, e.g. {sorted(missing)[:10]}"
    assert len(everything) == MESSAGE_COUNT
    assert first, "the first process received nothing: the channel was not shared"
    assert second, "the second process received nothing: the channel was not shared"
    receiver = make_layer()
    assert await receives_nothing(receiver, channel)


async def test_process_specific_channel_of_another_process_receives_in_order(
    make_layer: LayerFactory, redis_url: str, prefix: str
) -> None:
    count = 500
    child = Child("specific", redis_url, prefix, "-", "--idle-s", "2")
    try:
        channel = (await child.line(READY_TIMEOUT_S))["ready"]
        assert "!" in channel
        sender = make_layer(capacity=count)
        for n in range(count):
            await sender.send(channel, {"type": "x", "n": n})
        received = (await child.line(RESULT_TIMEOUT_S))["received"]
    finally:
        child.stop()
    assert received == list(range(count))


async def test_process_specific_channel_receives_from_another_process(
    make_layer: LayerFactory, redis_url: str, prefix: str
) -> None:
    owner = make_layer()
    channel = await owner.new_channel()
    count = 200
    # The sender retries on ChannelFull, as a producer must: 200 messages
    # exceed the default capacity whenever the receiving process falls behind.
    code = (
        "import asyncio, sys\n"
        "from channels.exceptions import ChannelFull\n"
        "from tests.layer_helpers import layer_class\n"
        "async def main():\n"
        "    layer = layer_class()(hosts=[sys.argv[1]], prefix=sys.argv[2])\n"
        "    for n in range(int(sys.argv[4])):\n"
        "        while True:\n"
        "            try:\n"
        "                await layer.send(sys.argv[3], {'type': 'x', 'n': n})\n"
        "                break\n"
        "            except ChannelFull:\n"
        "                await asyncio.sleep(0.01)\n"
        "    await layer.close_pools()\n"
        "asyncio.run(main())\n"
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), str(HELPER.parent)])
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, redis_url, prefix, channel, str(count), env=env
    )
    try:
        received = [(await receive_within(owner, channel, 15))["n"] for _ in range(count)]
        assert await asyncio.wait_for(process.wait(), 30) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert received == list(range(count))
