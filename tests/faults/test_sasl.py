"""SASL: the whole pipeline against the broker's SASL_PLAINTEXT (PLAIN) listener only: topic
creation and lag (admin), the producer SDK, the worker (Faust's consumer and producer, and its
own catalog-feed consumer and lag sampler) and a consumer reading recommendations. The password
appears in no log line and no error message, a wrong one included."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from streams.contracts.topics import create_topics
from tests.faults.conftest import SASL_PASSWORD, SASL_USER, PrivateBroker
from tests.faults.harness import (Figures, Worker, count_applied, dead_letters, fault_settings, feed_items,
                                  http_get, produce, read_table, fault_stream, wait_consumed,
                                  wait_recommended)

pytestmark = pytest.mark.faults

EVENTS = 300


def cli(settings_env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("XLREC_")} | settings_env
    return subprocess.run([sys.executable, "-m", "streams.cli", *args], env=env, capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)


def test_pipeline_over_sasl_never_shows_the_password(private_broker: PrivateBroker, tmp_path: Path) -> None:
    assert private_broker.info.sasl_bootstrap
    stream = fault_stream().head(EVENTS)
    settings = fault_settings(private_broker.info.sasl_bootstrap, security_protocol="SASL_PLAINTEXT",
                              sasl_mechanism="PLAIN", sasl_username=SASL_USER, sasl_password=SASL_PASSWORD)
    assert SASL_PASSWORD not in repr(settings) and SASL_PASSWORD not in str(settings.model_dump())
    create_topics(settings)
    worker = Worker(settings, tmp_path / "data", loglevel="info").start()
    try:
        worker.wait_ready()
        feed_items(settings, stream, [worker])
        produce(settings, stream.reviews)
        wait_consumed(settings, [settings.topic("reviews")], 300, [worker])
        wait_recommended(settings, {user: ids[-1] for user, ids in stream.expected().items()})
        _, metrics = http_get(worker.port, "/metrics")
        lag = cli({**worker.env, "XLREC_GROUP_ID": settings.group_id}, "lag", "--group", settings.group_id, "--json")
    finally:
        worker.stop()
    wrong = Worker(settings, tmp_path / "wrong", name="wrong-password",
                   env={"XLREC_SASL_PASSWORD": "not-the-" + SASL_PASSWORD}).start()
    wrong_code = wrong.wait_exit(60)
    table = read_table(settings)
    figures = Figures("sasl", produced=len(stream.reviews), dead_lettered=len(dead_letters(settings)))
    problems = count_applied(table, stream.expected(), figures)
    figures.print()
    assert figures.lost == 0 and figures.applied_twice == 0 and not problems, problems[:5]
    assert f'group="{settings.group_id}.catalog"'.encode() in metrics, "the catalog feed read over SASL"
    assert f'group="{settings.group_id}",'.encode() in metrics, "the lag sampler's admin client read over SASL"
    assert lag.returncode == 0 and settings.topic("reviews") in lag.stdout, lag.stderr
    wrong_output = wrong.output().strip()
    print("wrong password:", wrong_output)
    assert wrong_code != 0 and len(wrong_output.splitlines()) == 1
    assert f"refused the credentials of user '{SASL_USER}'" in wrong_output
    for name, text in (("worker log", worker.output()), ("xlrec lag", lag.stdout + lag.stderr),
                       ("wrong-password start", wrong_output)):
        assert SASL_PASSWORD not in text, f"the password appears in the {name}"
    assert len(worker.output()) > 1000, "the worker logged at info level"
