"""`streams.worker.app`: the Faust app gets the broker's security settings; the changelog names."""

from __future__ import annotations

import asyncio
from pathlib import Path

from streams.contracts.settings import Settings
from streams.worker.app import build_app, changelog_name


def test_security_settings_reach_faust(tmp_path: Path) -> None:
    import certifi

    ca_file = Path(certifi.where())
    plain = Settings(bootstrap="a:9092, b:9093")
    assert plain.connection().faust_broker_urls() == ["kafka://a:9092", "kafka://b:9093"]
    assert plain.connection().faust_credentials() is None
    sasl = Settings(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512", sasl_username="app",
                    sasl_password="s3cret", ssl_cafile=ca_file)
    creds = sasl.connection().faust_credentials()
    assert creds.protocol.value == "SASL_SSL" and creds.mechanism.value == "SCRAM-SHA-512"  # type: ignore[union-attr]
    assert creds.username == "app" and creds.password == "s3cret"  # type: ignore[union-attr]
    assert "s3cret" not in repr(creds)
    ssl_only = Settings(security_protocol="SSL", ssl_cafile=ca_file).connection().faust_credentials()
    assert ssl_only.protocol.value == "SSL"  # type: ignore[union-attr]
    app = build_app(sasl, web_enabled=False)
    assert app.conf.broker_credentials is creds or app.conf.broker_credentials.username == "app"
    assert changelog_name(plain, "users") == "xlrec.xlrec-users-changelog"


def test_fetches_wait_to_batch_records(tmp_path: Path) -> None:
    """The worker's aiokafka consumer waits up to XLREC_FETCH_WAIT_MS for 64 KiB, where Faust
    alone asks for fetches that return with the first byte (streams.worker.fetch). Built, not
    started: aiokafka reads both values only when it starts, so they must be on the consumer."""
    from streams.worker.fetch import FETCH_MIN_BYTES

    async def created(wait_ms: int) -> tuple[int, int]:
        app = build_app(Settings(data_dir=tmp_path, fetch_wait_ms=wait_ms), web_enabled=False)
        thread = app.consumer._thread   # type: ignore[attr-defined]
        consumer = thread._create_worker_consumer(app.transport)
        return consumer._fetch_min_bytes, consumer._fetch_max_wait_ms

    for wait_ms in (25, 7):
        assert asyncio.run(created(wait_ms)) == (FETCH_MIN_BYTES, wait_ms)
