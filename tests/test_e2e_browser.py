"""End to end: daphne and the worker as real processes, two real Chromium pages chatting.

Then HTTP requests with distinct user agents, each counted exactly once at
``/stats.json`` by the worker.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from chat.rooms import group_name
from devtools.redis_servers import find_free_port
from streams_layer import RedisStreamsChannelLayer

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
START_TIMEOUT_S = 30.0
UI_TIMEOUT_MS = 10_000
COUNT_TIMEOUT_S = 30.0


def http_get(url: str, user_agent: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"User-Agent": user_agent})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, b""


def wait_for_http(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"daphne exited with {process.returncode}:\n{log.read_text()}")
        try:
            http_get(url, "e2e-readiness-probe")
        except OSError:
            time.sleep(0.1)
        else:
            return
    pytest.fail(f"daphne did not answer within {START_TIMEOUT_S} s:\n{log.read_text()}")


@pytest.fixture
def sample_site(tmp_path: Path, redis_url: str, prefix: str) -> Iterator[str]:
    """Daphne and the statistic worker against the fixture Redis; yields the base URL."""
    port = find_free_port()
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "CHANNEL_LAYER_PREFIX": prefix,
        "DJANGO_DB_PATH": str(tmp_path / "db.sqlite3"),
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "PYTHONUNBUFFERED": "1",
    }
    python = sys.executable
    subprocess.run(
        [python, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True
    )
    logs = {name: tmp_path / f"{name}.log" for name in ("daphne", "worker")}
    argv = {
        "daphne": [
            python,
            "-m",
            "daphne",
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "project.asgi:application",
        ],
        "worker": [python, "manage.py", "runworker_statistic", "--progress-interval", "1"],
    }
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, command in argv.items():
            with logs[name].open("wb") as output:
                processes[name] = subprocess.Popen(
                    command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT
                )
        base = f"http://127.0.0.1:{port}"
        wait_for_http(base + "/", processes["daphne"], logs["daphne"])
        yield base
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for name, process in processes.items():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                pytest.fail(f"{name} ignored SIGTERM:\n{logs[name].read_text()}")
    assert processes["worker"].returncode == 0, logs["worker"].read_text()
    assert "stopped: processed=" in logs["worker"].read_text()


def open_room(page: Page, url: str) -> None:
    page.goto(url)
    expect(page.locator("#status")).to_have_text("connected", timeout=UI_TIMEOUT_MS)


def stats(base: str) -> dict[str, Any]:
    status, body = http_get(base + "/stats.json", "e2e-stats-reader")
    assert status == 200
    figures = json.loads(body)
    assert isinstance(figures, dict)
    return figures


def requests_by_agent(figures: dict[str, Any]) -> dict[str, int]:
    return {row["user_agent"]: row["requests"] for row in figures["by_user_agent"]}


# Far ahead of any id the room's history holds, so the consumers pass them on.
EARLIER_ID, LATER_ID = "9000000000000-0", "9000000000001-0"


async def _send_live(redis_url: str, prefix: str, room: str, ids: list[str]) -> None:
    """Live copies of recorded messages, as group_send_recorded sends them, in this order."""
    layer = RedisStreamsChannelLayer(hosts=[redis_url], prefix=prefix)
    try:
        for history_id in ids:
            await layer.group_send(
                group_name(room),
                {"type": "chat.message", "message": f"live {history_id}", "history_id": history_id},
            )
    finally:
        await layer.close()


def test_two_browsers_chat_and_each_request_is_counted_once(
    sample_site: str, redis_url: str, prefix: str
) -> None:
    room_url = sample_site + "/e2e-room/"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            first, second = browser.new_page(), browser.new_page()
            open_room(first, room_url)
            open_room(second, room_url)

            first.fill("#input", "hello from the first page")
            first.click("#submit")
            for page in (first, second):
                expect(page.locator("#log .message")).to_have_count(1, timeout=UI_TIMEOUT_MS)
                expect(page.locator("#log")).to_contain_text("hello from the first page")
            expect(first.locator("#input")).to_have_value("")

            # A message the server refuses comes back into the input, with the
            # reason in the log: 3,000 characters pass the input's maxlength,
            # 6,000 UTF-8 bytes exceed the server's 4 KB.
            too_long = "é" * 3000
            first.fill("#input", too_long)
            first.click("#submit")
            expect(first.locator("#log .error")).to_contain_text(
                "over the limit", timeout=UI_TIMEOUT_MS
            )
            expect(first.locator("#input")).to_have_value(too_long, timeout=UI_TIMEOUT_MS)
            first.fill("#input", "")

            markup = '<img src="x" onerror="document.title=\'owned\'"><b>bold</b>'
            second.fill("#input", markup)
            second.press("#input", "Enter")
            for page in (first, second):
                expect(page.locator("#log .message")).to_have_count(2, timeout=UI_TIMEOUT_MS)
                expect(page.locator("#log .message").nth(1)).to_contain_text(markup)
                assert page.locator("#log img, #log b").count() == 0
                assert page.title() != "owned"

            # Live copies of two messages recorded at once by two processes
            # can cross: the page shows both, in id order.
            with ThreadPoolExecutor(1) as thread:  # playwright's loop runs in this one
                live = _send_live(redis_url, prefix, "e2e-room", [LATER_ID, EARLIER_ID])
                thread.submit(asyncio.run, live).result(timeout=30)
            expect(first.locator("#log .message")).to_have_count(4, timeout=UI_TIMEOUT_MS)
            texts = first.locator("#log .message").all_text_contents()
            assert texts[2].endswith(f"live {EARLIER_ID}")
            assert texts[3].endswith(f"live {LATER_ID}")

            # A page opened later gets the history, in order.
            third = browser.new_page()
            open_room(third, room_url)
            expect(third.locator("#log .message")).to_have_count(2, timeout=UI_TIMEOUT_MS)
            texts = third.locator("#log .message").all_text_contents()
            assert texts[0].endswith("hello from the first page")
            assert texts[1].endswith(markup)
        finally:
            browser.close()

    agents = [f"e2e-agent-{number}" for number in range(1, 4)]
    for agent in agents:
        assert http_get(sample_site + "/e2e-room/", agent)[0] == 200
    assert http_get(sample_site + "/not%20a%20room/", "e2e-agent-404")[0] == 404

    deadline = time.monotonic() + COUNT_TIMEOUT_S
    wanted = [*agents, "e2e-agent-404"]
    while not set(wanted) <= set(requests_by_agent(stats(sample_site))):
        assert time.monotonic() < deadline, "the worker did not count the requests in time"
        time.sleep(0.2)
    time.sleep(1.0)  # a duplicate would have arrived by now
    counted = requests_by_agent(stats(sample_site))
    assert {agent: counted[agent] for agent in wanted} == dict.fromkeys(wanted, 1)
    # The browsers' own page loads were counted too.
    assert any("Chrome" in agent for agent in counted)
    assert http_get(sample_site + "/stats/", "e2e-stats-page")[0] == 200
