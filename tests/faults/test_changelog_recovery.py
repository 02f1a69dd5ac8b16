"""Changelog recovery: a worker on a new, empty state directory rebuilds the users table from
the changelog topic alone. Shown by asking for 100 items for the busiest users: the answer
leaves out exactly the items in each user's recovered history. With the engine's model
snapshot copied in as well (a backup of the River models and counters), the answers equal
those of the worker that wrote the table, item for item."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from streams.sdk.producer import EventProducer
from streams.contracts.schemas import Recommendation, RecommendationRequest
from streams.worker.cli import snapshot_path
from tests.faults.conftest import Reference
from tests.faults.harness import Figures, Worker, read_topic, fault_stream

pytestmark = pytest.mark.faults

USERS = 20
K = 100  # the most a request may ask for: at CI size every item the user has not seen


def leaves_out_history(answer: Recommendation, catalog: set[str], history: set[str]) -> bool:
    """The answer holds only unseen catalog items, as many as K allows: at CI size exactly
    the items outside the user's recovered history."""
    items = {i.item_id for i in answer.items}
    return items <= catalog - history and len(items) == min(K, len(catalog - history))


def ask(worker: Worker, reference: Reference, users: list[str], tag: str) -> dict[str, Recommendation]:
    """Start the worker, request every user's items, collect the answers, stop it."""
    settings = reference.settings
    worker.start()
    try:
        worker.wait_ready()
        with EventProducer(settings) as producer:
            for user in users:
                producer.send(RecommendationRequest(request_id=f"{tag}-{user}", user_id=user, k=K, ts=time.time()))
        deadline = time.time() + 120
        answers: dict[str, Recommendation] = {}
        while len(answers) < len(users) and time.time() < deadline:
            assert worker.alive(), worker.output()[-3000:]
            for msg in read_topic(settings, settings.topic("recommendations")):
                rec = Recommendation.model_validate_json(msg.value())
                if rec.request_id and rec.request_id.startswith(f"{tag}-"):
                    answers[rec.user_id] = rec
            time.sleep(1.0)
        assert len(answers) == len(users), f"{tag}: {len(answers)} of {len(users)} answered"
        return answers
    finally:
        worker.stop()


def test_an_empty_state_dir_rebuilds_the_users_table_from_the_changelog(reference: Reference, tmp_path: Path) -> None:
    settings = reference.settings
    expected = fault_stream().expected()
    users = sorted(expected, key=lambda u: (-len(expected[u]), u))[:USERS]
    catalog = {item.item_id for item in fault_stream().items}

    original = ask(Worker(settings, reference.data_dir, name="original"), reference, users, "orig")
    empty = ask(Worker(settings, tmp_path / "empty" / "data", name="empty"), reference, users, "empty")
    restored_dir = tmp_path / "restored" / "data"
    snap = snapshot_path(reference.data_dir, settings.group_id)
    target = snapshot_path(restored_dir, settings.group_id)
    target.parent.mkdir(parents=True)
    for name in (snap.name, "resume.json"):
        shutil.copy(snap.with_name(name), target.with_name(name))
    restored = ask(Worker(settings, restored_dir, name="restored"), reference, users, "restored")

    history = {u: {r[0] for r in reference.table[u].profile["recent"]} for u in users}
    wrong_sets = [u for u in users if not leaves_out_history(empty[u], catalog, history[u])]
    different = [u for u in users if [(i.item_id, i.reason) for i in restored[u].items]
                 != [(i.item_id, i.reason) for i in original[u].items]]
    figures = Figures("changelog recovery", produced=len(users),
                      extra={"empty_dir_history_mismatches": len(wrong_sets),
                             "snapshot_copy_ranking_mismatches": len(different)})
    figures.applied = len(users) - len(wrong_sets)
    figures.lost = len(wrong_sets)
    figures.print()
    assert not wrong_sets, f"recommended sets ignore the recovered history, e.g. {wrong_sets[:3]}"
    assert not different, f"different rankings after recovery, e.g. {different[:3]}"
