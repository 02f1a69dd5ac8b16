"""The user routes on two real workers (issue 16, point 6): `GET /users/{id}/recommendations` and
`/profile` answer on either worker, the one not holding the user's partition by asking the one
that does; after a second worker joins, the first stops answering for the partitions it gave
away (it asks the new holder: on the old code it kept serving its list of before the user's next
event); and after a restart the holder answers from the users table. Every answer is compared
with the user's last event."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.contracts.schemas import ReviewEvent
from streams.contracts.topics import create_topics
from streams.worker.web import SERVED_BY_HEADER
from tests.faults.harness import (Figures, Worker, count_applied, counter, dead_letters, fault_settings, fault_stream,
                                  feed_items, produce, read_table, wait_consumed, wait_recommended)

pytestmark = pytest.mark.faults

REVIEWS = 300
SAMPLE = 40
SETTLE_S = 180.0


def ask(worker: Worker, path: str) -> tuple[int, Any, str | None]:
    """(status, JSON, the URL that answered when the request was forwarded)."""
    request = urllib.request.Request(f"http://127.0.0.1:{worker.port}{path}")
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, orjson.loads(response.read()), response.headers.get(SERVED_BY_HEADER)
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read() or b"null"), exc.headers.get(SERVED_BY_HEADER)


def wrong_answers(workers: list[Worker], last: dict[str, str], count: dict[str, int]) -> list[str]:
    """Users some worker does not answer for with a list that reflects their last event and a
    profile of all their events."""
    wrong = []
    for user, event in last.items():
        for w in workers:
            status, body, _ = ask(w, f"/users/{user}/recommendations")
            if status != 200 or body.get("trigger_event_id") != event:
                wrong.append(f"{user} on {w.port}: {status} {body.get('trigger_event_id') if status == 200 else body}")
                continue
            status, body, _ = ask(w, f"/users/{user}/profile")
            if status != 200 or body.get("events") != count[user]:
                wrong.append(f"{user} profile on {w.port}: {status} {body}")
    return wrong


def settle(workers: list[Worker], last: dict[str, str], count: dict[str, int], timeout: float = SETTLE_S) -> list[str]:
    deadline = time.time() + timeout
    while True:
        for w in workers:
            assert w.alive(), w.output()[-3000:]
        wrong = wrong_answers(workers, last, count)
        if not wrong or time.time() > deadline:
            return wrong
        time.sleep(1.0)


def test_either_worker_answers_for_every_user_and_a_moved_partition_is_not_served_stale(
        kafka_bootstrap: str, tmp_path: Path) -> None:
    stream = fault_stream().head(REVIEWS)
    settings = fault_settings(kafka_bootstrap)
    create_topics(settings)
    expected = stream.expected()
    sample = sorted(expected, key=lambda u: (-len(expected[u]), u))[:SAMPLE]
    last = {u: expected[u][-1] for u in sample}
    count = {u: len(expected[u]) for u in sample}
    first = Worker(settings, tmp_path / "a" / "data", name="a")
    second = Worker(settings, tmp_path / "b" / "data", name="b")
    for w in (first, second):
        w.data_dir.parent.mkdir(parents=True)
    figures = Figures("user routes", produced=len(stream.reviews))
    try:
        first.start().wait_ready()
        feed_items(settings, stream, [first])
        produce(settings, stream.reviews)
        wait_consumed(settings, [settings.topic("reviews")], 300, [first])
        wait_recommended(settings, {u: ids[-1] for u, ids in expected.items()})
        alone = settle([first], last, count)
        assert not alone, alone[:5]

        second.start().wait_ready()
        both = settle([first, second], last, count)
        served_by = {w.port: [ask(w, f"/users/{u}/recommendations")[2] for u in sample] for w in (first, second)}
        forwarded = {port: sum(s is not None for s in urls) for port, urls in served_by.items()}
        # Each user's next event, ranked by whichever worker now holds the user: the other must
        # not answer with the list it held before.
        item = stream.reviews[0].item_id
        nxt = [ReviewEvent(event_id=f"next-{u}", user_id=u, item_id=item, ts=time.time(), text="noch einmal",
                           lang="de", voted_up=True) for u in sample]
        produce(settings, nxt)
        produced = len(stream.reviews) + len(nxt)
        last = {u: f"next-{u}" for u in sample}
        count = {u: n + 1 for u, n in count.items()}
        wait_consumed(settings, [settings.topic("reviews")], 300, [first, second])
        after_next = settle([first, second], last, count)

        second.stop()                                   # it leaves: the first holds everything again
        left = settle([first], last, count)
        first.kill()                                    # and restarts, its lists lost with the process
        first.start().wait_ready()
        restarted = settle([first], last, count)
        on_read = counter(first, "xlrec_recommendations_on_read_total")
    finally:
        first.stop()
        second.stop()
    figures.produced = produced
    everyone = {u: [*ids, *([f"next-{u}"] if u in last else [])] for u, ids in expected.items()}
    problems = count_applied(read_table(settings), everyone, figures)
    figures.dead_lettered = len(dead_letters(settings))
    figures.extra.update({"users_asked": len(sample),
                          "forwarded_by_first": forwarded[first.port], "forwarded_by_second": forwarded[second.port],
                          "wrong_with_two_workers": len(both), "wrong_after_next_event": len(after_next),
                          "wrong_after_second_left": len(left), "wrong_after_restart": len(restarted),
                          "ranked_on_read_after_restart": int(on_read)})
    figures.print()
    assert figures.lost == 0 and figures.applied_twice == 0 and not problems, problems[:5]
    assert not both, both[:5]
    assert forwarded[first.port] > 0 and forwarded[second.port] > 0, forwarded   # each held some partitions
    assert not after_next, after_next[:5]
    assert not left, left[:5]
    assert not restarted, restarted[:5]
    assert figures.dead_lettered == 0
