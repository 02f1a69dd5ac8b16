"""Invalid XLREC_* settings end every command with one line per bad variable, naming it and the
fix, and exit status 2: no pydantic traceback. SASL needs a mechanism, for the SDK and the worker
alike (one rule, in the settings model), and TLS files must exist."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from streams.cli import app
from streams.contracts.connection import ConnectionConfig
from streams.contracts.settings import Settings, get_settings


@pytest.fixture(autouse=True)
def fresh_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """get_settings() is cached per process: read the environment of each test anew."""
    for name in ("XLREC_PARTITIONS", "XLREC_SECURITY_PROTOCOL", "XLREC_SASL_MECHANISM", "XLREC_SSL_CAFILE"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def run(args: list[str], env: dict[str, str]) -> tuple[int, list[str]]:
    get_settings.cache_clear()
    result = CliRunner().invoke(app, args, env=env)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result.exit_code, result.stderr.strip().splitlines()


def commands(tmp_path: Path) -> list[list[str]]:
    events = tmp_path / "clicks.jsonl"
    events.write_text('{"user_id": "u1", "item_id": "i1", "ts": 1700000000}\n')
    return [["lag"], ["dashboard"], ["topics", "create"], ["produce", "clicks", str(events)],
            ["tail", "recommendations", "--max", "1"], ["worker"]]


@pytest.mark.parametrize("index", range(6))
def test_every_command_names_the_bad_variable(index: int, tmp_path: Path) -> None:
    args = commands(tmp_path)[index]
    code, lines = run(args, {"XLREC_PARTITIONS": "abc"})
    print(f"xlrec {' '.join(args)}:", lines)
    assert code == 2
    assert lines == ["error: XLREC_PARTITIONS=abc: input should be a valid integer, unable to parse string as "
                     "an integer; fix it or unset it for the default (8)"]


def test_one_line_per_bad_variable() -> None:
    code, lines = run(["lag"], {"XLREC_PARTITIONS": "0", "XLREC_SECURITY_PROTOCOL": "TLS"})
    assert code == 2 and len(lines) == 2
    assert lines[0].startswith("error: XLREC_PARTITIONS=0: input should be greater than or equal to 1")
    assert lines[1].startswith("error: XLREC_SECURITY_PROTOCOL=TLS: input should be 'PLAINTEXT', 'SSL'")


@pytest.mark.parametrize("protocol", ["SASL_SSL", "SASL_PLAINTEXT"])
def test_sasl_without_a_mechanism_is_refused(protocol: str) -> None:
    code, lines = run(["topics", "create"], {"XLREC_SECURITY_PROTOCOL": protocol})
    assert code == 2
    assert lines == [f"error: XLREC_SASL_MECHANISM is required with XLREC_SECURITY_PROTOCOL={protocol}; "
                     "set it to PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"]
    # The SDK (librdkafka) and the worker (Faust, aiokafka) build from these settings: neither
    # can guess a mechanism of its own.
    with pytest.raises(ValidationError, match="XLREC_SASL_MECHANISM is required"):
        Settings(security_protocol=protocol)
    with pytest.raises(ValueError, match="XLREC_SASL_MECHANISM is required"):
        ConnectionConfig("h:1", security_protocol=protocol)
    assert Settings(security_protocol=protocol, sasl_mechanism="PLAIN").connection().librdkafka()[
        "sasl.mechanism"] == "PLAIN"


def test_missing_ca_file(tmp_path: Path) -> None:
    missing = tmp_path / "ca.pem"
    code, lines = run(["lag"], {"XLREC_SECURITY_PROTOCOL": "SSL", "XLREC_SSL_CAFILE": str(missing)})
    assert code == 2
    assert lines == [f"error: XLREC_SSL_CAFILE={missing}: path does not point to a file; "
                     "point it at an existing file or unset it"]
