"""`xlrec dashboard` in headless Chromium against a real broker: while a consumer falls behind
the lag on the page rises, and it returns to 0 once the consumer catches up, without reloads."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import NewTopic

from streams.contracts.settings import Settings
from streams.contracts.topics import admin_client

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROME_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage",
                "--window-size=1400,1250")
XLREC = str(Path(sys.executable).with_name("xlrec"))
SLOW_WORKER = Path(__file__).with_name("slow_worker.py")
BURST = 400  # messages produced while the worker is paused

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                       reason="needs Debian's chromium and chromium-driver "
                              "(`make install` runs: apt-get install -y chromium chromium-driver)"),
]


def wait_for(what: str, check: Callable[[], Any], timeout: float = 30.0, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def produce(settings: Settings, topic: str, count: int, seconds: float) -> None:
    """`count` messages spread over `seconds`, so the page sees the lag climb over several ticks."""
    producer = Producer(settings.connection().librdkafka())
    for n in range(count):
        producer.produce(topic, key=f"user-{n % 50}".encode(), value=b'{"type":"click"}')
        producer.poll(0)
        time.sleep(seconds / count)
    assert producer.flush(10) == 0


def page_lag(driver: WebDriver) -> int | None:
    """The total lag the page shows, or None before the first snapshot or on a Kafka error."""
    from selenium.webdriver.common.by import By

    value = driver.find_element(By.ID, "total-lag").get_attribute("data-lag")
    return int(value) if value else None


def test_dashboard_shows_lag_rise_and_recover(kafka_settings: Settings, browser: WebDriver,
                                              tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    topic = kafka_settings.topic("clicks")
    group = f"{kafka_settings.topic_prefix}worker"
    admin = admin_client(kafka_settings)
    for future in admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)]).values():
        future.result()
    env = {**os.environ, "XLREC_BOOTSTRAP": kafka_settings.bootstrap,
           "XLREC_TOPIC_PREFIX": kafka_settings.topic_prefix, "XLREC_GROUP_ID": f"g{uuid.uuid4().hex[:8]}"}
    pause, port_file = tmp_path / "pause", tmp_path / "worker.port"
    worker = start([sys.executable, str(SLOW_WORKER), kafka_settings.bootstrap, topic, group,
                    str(port_file), str(pause)], env, tmp_path / "worker.log")
    dashboard = None
    try:
        metrics_port = wait_for("the stand-in worker's /metrics", lambda: port_file.exists()
                                and port_file.read_text())
        dashboard = start([XLREC, "dashboard", "--port", "0", "--workers", f"127.0.0.1:{metrics_port}"],
                          env, tmp_path / "dashboard.log")
        url = wait_for("the dashboard's URL", lambda: _announced_url(tmp_path / "dashboard.log"), timeout=20)

        produce(kafka_settings, topic, 20, 0.2)  # the group commits on both partitions: rows appear
        browser.get(url)
        wait_for("the group's rows at lag 0", lambda: page_lag(browser) == 0 and browser.find_elements(
            By.CSS_SELECTOR, f'#lag-table tr[data-group="{group}"]'))

        pause.touch()  # the worker stops polling and falls behind
        wait_for("the worker to pause", pause.with_suffix(".ack").exists)
        producing = threading.Thread(target=produce, args=(kafka_settings, topic, BURST, 4.0))
        producing.start()
        rising = [page_lag(browser)]
        deadline = time.monotonic() + 20
        while rising[-1] != BURST and time.monotonic() < deadline:
            time.sleep(0.25)
            if (lag := page_lag(browser)) is not None and lag != rising[-1]:
                rising.append(lag)
        producing.join()
        assert rising[-1] == BURST, f"page lag went {rising}, expected to reach {BURST}"
        assert len([v for v in rising if 0 < v < BURST]) >= 2 and rising == sorted(rising), rising
        browser.save_screenshot(str(tmp_path / "dashboard-behind.png"))

        pause.unlink()  # the worker catches up at ~100 messages/s
        falling = [BURST]
        deadline = time.monotonic() + 30
        while falling[-1] != 0 and time.monotonic() < deadline:
            time.sleep(0.25)
            if (lag := page_lag(browser)) is not None and lag != falling[-1]:
                falling.append(lag)
        assert falling[-1] == 0, f"page lag went {falling}, expected to return to 0"
        assert len(falling) >= 3, f"lag jumped straight to 0 ({falling}): the page missed the catching up"

        # The page kept updating itself: snapshots at most 2 s apart, nothing fetched from elsewhere.
        times = browser.execute_script("return snapshots.slice(-20).map(s => s.t)")
        assert max(b - a for a, b in zip(times, times[1:], strict=False)) <= 2.0
        origins = browser.execute_script(
            "return performance.getEntriesByType('resource').map(e => new URL(e.name).origin)")
        assert set(origins) <= {url.rstrip("/")}, origins
        wait_for("worker throughput on the page", lambda: browser.find_element(By.ID, "workers-up").text == "1/1")
        assert "processed, summed over workers" in browser.find_element(By.ID, "throughput-source").text
        time.sleep(2)  # a flat stretch at 0 after the fall, for the picture
        shot = tmp_path / "dashboard.png"
        browser.save_screenshot(str(shot))
        print(f"\ndashboard screenshot: {shot}\npage lag rising: {rising}\npage lag falling: {falling}")
    finally:
        for proc in (dashboard, worker):
            if proc is not None:
                stop(proc)


def _announced_url(log: Path) -> str | None:
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("xlrec dashboard on "):
            return line.split()[3]
    return None
