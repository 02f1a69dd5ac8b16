"""Names and texts that come from outside (consumer groups, topics, item titles) are shown as
written: rich markup in them does not crash the CLI, and a right-to-left override in a group
name does not reverse the rest of its line, in the terminal or on the dashboard."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from streams.cli import app
from streams.contracts.schemas import Recommendation, RecommendedItem
from streams.ops.lag import LagReport, PartitionLag

RLO = "\u202e"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


class FakeMonitor:
    """Stands in for LagMonitor: always the same report."""

    def __init__(self, report: LagReport):
        self.report = report

    def sample(self) -> LagReport:
        return self.report


def lag_report(group: str, topic: str = "xlrec.clicks") -> LagReport:
    return LagReport(at=0.0, rows=[PartitionLag(group, topic, 0, 5, 12, 7, None, None)])


def test_lag_shows_a_group_named_like_markup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("streams.ops.lag.open_monitor", lambda *a, **k: FakeMonitor(lag_report("xlrec[/]")))
    result = CliRunner().invoke(app, ["lag", "--interval", "0", "--max-lag", "100"])
    assert result.exit_code == 0, result.output
    assert "xlrec[/]" in result.output


def test_lag_keeps_a_bidi_override_from_reversing_the_row(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("streams.ops.lag.open_monitor",
                        lambda *a, **k: FakeMonitor(lag_report(f"evil{RLO}group")))
    result = CliRunner().invoke(app, ["lag", "--interval", "0"])
    assert result.exit_code == 0, result.output
    assert RLO not in result.output and "evil\\u202egroup" in result.output


def test_safe_escapes_markup_and_shows_bidi_controls() -> None:
    from streams.sdk.render import safe

    assert safe("Markup [/] crash") == "Markup \\[/] crash"
    assert safe(f"a{RLO}b\u2066c") == "a\\u202eb\\u2066c"


class FakeConsumer:
    """Stands in for RecommendationConsumer: one recommendation, then nothing."""

    def __init__(self, *args: Any, **kwargs: Any):
        self.recs = [Recommendation(user_id="u1", model_version="v[/]", items=[
            RecommendedItem(item_id="i1", score=0.5, reason="because [/] you", title="Markup [/] crash")])]

    def poll(self, timeout_s: float) -> Recommendation | None:
        return self.recs.pop() if self.recs else None

    def __enter__(self) -> FakeConsumer:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def test_tail_shows_a_title_named_like_markup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("streams.sdk.consumer.RecommendationConsumer", FakeConsumer)
    result = CliRunner().invoke(app, ["tail", "recommendations", "--max", "1"],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for text in ("Markup [/] crash (i1)", "because [/] you", "(v[/])"):
        assert text in result.output


@pytest.fixture
def dashboard_url() -> Iterator[str]:
    """`xlrec dashboard`'s page on a free port, fed a lag report with an RLO in a group name."""
    from streams.ops.dashboard import serve

    bound: list[str] = []
    ready = threading.Event()
    loop = asyncio.new_event_loop()

    def on_bound(url: str) -> None:
        bound.append(url)
        ready.set()

    task = loop.create_task(serve(lambda: lag_report(f"xlrec{RLO}evil", "xlrec.topic"), [], 0,
                                  tick_s=0.2, on_bound=on_bound))

    def run() -> None:
        with contextlib.suppress(asyncio.CancelledError):
            loop.run_until_complete(task)
        loop.run_until_complete(asyncio.sleep(0.1))  # let the page's ticking task see its cancel

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(10), "the dashboard did not bind"
    try:
        yield bound[0]
    finally:
        loop.call_soon_threadsafe(task.cancel)
        thread.join(10)


# Character boxes of the word "topic" inside an element's text: in reading order left to
# right unless an override reversed it.
TOPIC_LEFTS = """
const root = document.querySelector(arguments[0]);
const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
for (let node = walker.nextNode(); node; node = walker.nextNode()) {
  const at = node.data.indexOf("topic");
  if (at < 0) continue;
  return [...Array(5).keys()].map((i) => {
    const range = document.createRange();
    range.setStart(node, at + i);
    range.setEnd(node, at + i + 1);
    return range.getBoundingClientRect().left;
  });
}
return null;
"""


@pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                    reason="needs Debian's chromium and chromium-driver")
def test_dashboard_isolates_group_names(dashboard_url: str) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1250"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        driver.get(dashboard_url)
        WebDriverWait(driver, 20).until(lambda d: d.execute_script(TOPIC_LEFTS, "#legend-lag span"))
        legend = driver.execute_script(TOPIC_LEFTS, "#legend-lag span")
        row = driver.execute_script(TOPIC_LEFTS, "#lag-table tbody tr")
        print("x of t,o,p,i,c in the legend:", legend, "in the table row:", row)
        assert legend == sorted(legend) and legend[0] < legend[-1]  # "topic", not "cipot"
        assert row == sorted(row) and row[0] < row[-1]
    finally:
        driver.quit()
