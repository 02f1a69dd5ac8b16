"""SASL and TLS settings reach every kind of Kafka client xlrec creates: librdkafka ones (producer
SDK, consumers, admin/lag: `Settings.kafka_config`), Faust's (`broker_credentials`) and the
worker's own aiokafka consumer (`aiokafka_security`); the password shows in none of their reprs.
tests/faults/test_sasl.py runs them all against a broker's SASL listener."""

from __future__ import annotations

import ssl

import faust
from pydantic import SecretStr

from streams.worker.app import aiokafka_security, broker_credentials
from streams.contracts.settings import Settings

PASSWORD = "pw-never-shown-123"


def settings(protocol: str) -> Settings:
    return Settings(security_protocol=protocol, sasl_mechanism="SCRAM-SHA-512", sasl_username="app",
                    sasl_password=SecretStr(PASSWORD))


def test_sasl_ssl_reaches_librdkafka_faust_and_aiokafka() -> None:
    s = settings("SASL_SSL")
    conf = s.kafka_config()
    assert conf["security.protocol"] == "SASL_SSL" and conf["sasl.mechanism"] == "SCRAM-SHA-512"
    assert conf["sasl.username"] == "app" and conf["sasl.password"] == PASSWORD
    creds = broker_credentials(s)
    assert isinstance(creds, faust.SASLCredentials) and isinstance(creds.ssl_context, ssl.SSLContext)
    assert creds.username == "app" and creds.password == PASSWORD
    aio = aiokafka_security(s)
    assert aio["security_protocol"] == "SASL_SSL" and aio["sasl_mechanism"] == "SCRAM-SHA-512"
    assert aio["sasl_plain_username"] == "app" and aio["sasl_plain_password"] == PASSWORD
    assert isinstance(aio["ssl_context"], ssl.SSLContext)
    for shown in (repr(s), str(s.model_dump()), repr(creds)):
        assert PASSWORD not in shown


def test_tls_without_sasl_and_plaintext() -> None:
    tls = settings("SSL")
    assert isinstance(broker_credentials(tls), faust.SSLCredentials)
    assert "sasl_plain_password" not in aiokafka_security(tls)
    assert isinstance(aiokafka_security(tls)["ssl_context"], ssl.SSLContext)
    plain = Settings()
    assert broker_credentials(plain) is None and aiokafka_security(plain) == {"security_protocol": "PLAINTEXT"}
