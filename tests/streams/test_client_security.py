"""SASL and TLS settings reach every kind of Kafka client xlrec creates through one
`ConnectionConfig` (`Settings.connection()`): its librdkafka rendering (producer SDK, consumers,
admin/lag), its Faust rendering (the worker's app) and its aiokafka rendering (the worker's
own catalog-feed consumer) agree on protocol, mechanism, user, password and TLS files; the
password shows in none of their reprs. tests/faults/test_sasl.py runs them all against a
broker's SASL listener."""

from __future__ import annotations

import ssl
from pathlib import Path

import certifi
import faust
import pytest
from pydantic import SecretStr

from streams.contracts.connection import ConnectionConfig
from streams.contracts.settings import Settings
from streams.worker.app import build_app

PASSWORD = "pw-never-shown-123"
CA_FILE = Path(certifi.where())


def settings(protocol: str, **extra: object) -> Settings:
    return Settings(security_protocol=protocol, sasl_mechanism="SCRAM-SHA-512", sasl_username="app",
                    sasl_password=SecretStr(PASSWORD), **extra)


def test_from_settings_copies_bootstrap_and_security() -> None:
    s = settings("SASL_SSL", bootstrap="a:9092,b:9093", ssl_cafile=CA_FILE)
    conn = s.connection()
    assert conn == ConnectionConfig.from_settings(s)
    assert (conn.bootstrap, conn.security_protocol, conn.sasl_mechanism, conn.sasl_username) == \
        ("a:9092,b:9093", "SASL_SSL", "SCRAM-SHA-512", "app")
    assert conn.password() == PASSWORD and conn.ssl_cafile == CA_FILE
    with pytest.raises(AttributeError):
        conn.bootstrap = "elsewhere"  # type: ignore[misc]


@pytest.mark.parametrize("protocol", ["SASL_SSL", "SASL_PLAINTEXT"])
def test_sasl_renderings_agree(protocol: str) -> None:
    s = settings(protocol, bootstrap="a:9092, b:9093", ssl_cafile=CA_FILE)
    conn = s.connection()
    tls = protocol == "SASL_SSL"

    rd = conn.librdkafka()
    assert rd["bootstrap.servers"] == "a:9092, b:9093"
    assert rd["security.protocol"] == protocol and rd["sasl.mechanism"] == "SCRAM-SHA-512"
    assert rd["sasl.username"] == "app" and rd["sasl.password"] == PASSWORD
    assert rd["ssl.ca.location"] == str(CA_FILE)

    aio = conn.aiokafka()
    assert aio["bootstrap_servers"] == "a:9092, b:9093"
    assert aio["security_protocol"] == protocol and aio["sasl_mechanism"] == "SCRAM-SHA-512"
    assert aio["sasl_plain_username"] == "app" and aio["sasl_plain_password"] == PASSWORD
    assert isinstance(aio.get("ssl_context"), ssl.SSLContext) == tls

    creds = conn.faust_credentials()
    assert isinstance(creds, faust.SASLCredentials)
    assert creds.protocol.value == protocol and creds.mechanism.value == "SCRAM-SHA-512"
    assert creds.username == "app" and creds.password == PASSWORD
    assert isinstance(creds.ssl_context, ssl.SSLContext) == tls
    assert conn.faust_broker_urls() == ["kafka://a:9092", "kafka://b:9093"]

    app = build_app(s, web_enabled=False)
    assert app.conf.broker_credentials.username == "app"
    assert [str(url) for url in app.conf.broker] == ["kafka://a:9092", "kafka://b:9093"]

    for shown in (repr(s), str(s.model_dump()), repr(conn), repr(creds)):
        assert PASSWORD not in shown


def test_tls_without_sasl() -> None:
    conn = Settings(security_protocol="SSL", ssl_cafile=CA_FILE).connection()
    rd = conn.librdkafka()
    assert rd["security.protocol"] == "SSL" and rd["ssl.ca.location"] == str(CA_FILE)
    assert not any(key.startswith("sasl.") for key in rd)
    aio = conn.aiokafka()
    assert aio["security_protocol"] == "SSL" and isinstance(aio["ssl_context"], ssl.SSLContext)
    assert not any(key.startswith("sasl_") for key in aio)
    creds = conn.faust_credentials()
    assert isinstance(creds, faust.SSLCredentials) and creds.protocol.value == "SSL"


def test_plaintext() -> None:
    conn = Settings(bootstrap="h:1").connection()
    assert {k: v for k, v in conn.librdkafka().items() if k != "logger"} == \
        {"bootstrap.servers": "h:1", "security.protocol": "PLAINTEXT"}
    assert conn.aiokafka() == {"bootstrap_servers": "h:1", "security_protocol": "PLAINTEXT"}
    assert conn.faust_credentials() is None
    assert conn.faust_broker_urls() == ["kafka://h:1"]


def test_tls_files_reach_librdkafka_and_the_ssl_context(tmp_path: Path) -> None:
    files = {"ssl_cafile": tmp_path / "ca.pem", "ssl_certfile": tmp_path / "cert.pem",
             "ssl_keyfile": tmp_path / "key.pem"}
    for path in files.values():
        path.write_text("not a PEM file\n")  # Settings checks that they exist
    conn = Settings(security_protocol="SSL", **files).connection()
    rd = conn.librdkafka()
    assert (rd["ssl.ca.location"], rd["ssl.certificate.location"], rd["ssl.key.location"]) == \
        tuple(str(p) for p in files.values())
    # aiokafka and Faust read the same files when they build their SSL context.
    with pytest.raises((FileNotFoundError, ssl.SSLError)):
        conn.aiokafka()
    with pytest.raises((FileNotFoundError, ssl.SSLError)):
        conn.faust_credentials()
