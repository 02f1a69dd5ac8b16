"""One settings object for every xlrec process, read from `XLREC_*` environment variables."""

from __future__ import annotations

import socket
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, FilePath, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.contracts.connection import ConnectionConfig, sasl_mechanism_problem

TOPIC_NAMES = ("items", "clicks", "reviews", "requests", "recommendations", "dlq")


def default_cache_dir() -> Path:
    """Models, broker jars and embedding caches live outside the repository."""
    return Path.home() / ".cache" / "xlrec"


class Settings(BaseSettings):
    """Settings shared by the worker, the SDK and the CLI. Every field is `XLREC_<NAME>`."""

    model_config = SettingsConfigDict(env_prefix="XLREC_", extra="ignore")

    bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers, comma separated")
    topic_prefix: str = Field("xlrec.", description="Prefix of every topic name")
    partitions: int = Field(8, ge=1, description="Partitions per topic when xlrec creates topics")
    replication: int = Field(1, ge=1, description="Replication factor when xlrec creates topics")
    group_id: str = Field("xlrec", description="Consumer group / Faust app id of the worker")

    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    # Required with a SASL protocol (no silent default: the SDK and the worker read the same rule).
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(None, validate_default=True)
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    # TLS files must exist: a typo is reported at start, not as a TLS handshake error later.
    ssl_cafile: FilePath | None = None
    ssl_certfile: FilePath | None = None
    ssl_keyfile: FilePath | None = None

    data_dir: Path = Field(default_factory=lambda: default_cache_dir() / "data",
                           description="Worker state: tables, embedded Qdrant, snapshots")
    cache_dir: Path = Field(default_factory=default_cache_dir,
                            description="Exported models, broker jars, embedding cache")
    qdrant_url: str | None = Field(None, description="Qdrant server URL; embedded Qdrant when unset")
    users_store: Literal["rocksdb", "memory"] = Field(
        "rocksdb", description="Where the worker keeps the users table: `rocksdb` (on disk in data_dir, "
        "memory flat in users, a restart recovers only the changelog written since) or `memory` "
        "(everything in memory, a restart replays the whole changelog)")
    users_cache_mb: int = Field(256, ge=1, description="RocksDB block cache of the users table, MiB "
                                "(shared out over the partitions)")
    standby_replicas: int = Field(1, ge=0, description="Faust table_standby_replicas: other workers "
                                  "that keep a standby copy of each users-table partition")

    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Encoder execution device")
    encoder_max_tokens: int = Field(256, ge=8, le=512)
    encoder_threads: int = Field(0, ge=0, description="onnxruntime intra-op threads, "
                                 "0 = all cores (the worker: 1 for items and queries, all for review texts)")
    review_text_process: bool = Field(True, description="On CPU, embed review texts in a process of "
                                      "their own at a lower OS priority, so a backlog of texts never takes "
                                      "the event path's CPU or GIL (off: a thread of the worker)")

    web_port: int = Field(6066, description="Worker HTTP port: /metrics and the recommendations API")
    # Loopback by default: the routes publish user data, so serving a network is a deliberate choice.
    web_host: str = Field("127.0.0.1", description="Address the worker's HTTP server binds to "
                          "(0.0.0.0: every interface, as in the compose file)")
    web_url: str | None = Field(None, description="URL the other workers reach this worker's HTTP server "
                                "at (they forward user routes to the worker holding the user's partition); "
                                "default http://<XLREC_WEB_HOST>:<XLREC_WEB_PORT>, with the host name when "
                                "the server binds every interface")
    web_token: SecretStr | None = Field(None, description="When set, every worker HTTP route but "
                                        "/metrics and /health/* asks for `Authorization: Bearer <token>`")
    top_k: int = Field(10, ge=1, le=100)
    rank_interval_s: float = Field(1.0, ge=0.0, description="At most one ranking per user per interval")
    fetch_wait_ms: int = Field(25, ge=0, le=1000, description="The longest a worker's fetch waits for "
                               "more records (it returns at once with 64 KiB): batching fetches saves the "
                               "CPU that one fetch per event costs, for at most this much latency")
    ranking_enabled: bool = Field(True, description="Rank users after their profiles change; off, "
                                  "profiles still update and requests are still answered")
    feedback_window_s: float = Field(600.0, gt=0.0, description="Recommended items not clicked "
                                     "within this many seconds are negatives for the ranker")
    snapshot_interval_s: float = Field(60.0, gt=0.0, description="How often the worker snapshots "
                                       "its River models and counters to data_dir")

    @field_validator("sasl_mechanism")
    @classmethod
    def _mechanism_with_sasl(cls, value: str | None, info: ValidationInfo) -> str | None:
        problem = sasl_mechanism_problem(info.data.get("security_protocol"), value)
        if problem:
            raise ValueError(problem)
        return value

    def topic(self, name: str) -> str:
        """Full topic name for one of TOPIC_NAMES."""
        if name not in TOPIC_NAMES:
            raise ValueError(f"unknown topic {name!r}; expected one of {', '.join(TOPIC_NAMES)}")
        return f"{self.topic_prefix}{name}"

    def advertised_web_url(self) -> str:
        """`web_url`, or the URL this worker's HTTP server is reached at by default."""
        if self.web_url:
            return self.web_url.rstrip("/")
        host = self.web_host
        if host in ("", "0.0.0.0", "::"):
            host = socket.gethostname()
        elif ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.web_port}"

    def connection(self) -> ConnectionConfig:
        """Bootstrap servers and security, rendered per Kafka client library."""
        return ConnectionConfig.from_settings(self)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read once from the environment)."""
    return Settings()


SECRET_FIELDS = {"sasl_password", "web_token"}


def describe_settings_error(exc: ValidationError) -> list[str]:
    """One line per bad variable, naming it, its value and the fix (no pydantic traceback)."""
    lines = []
    for error in exc.errors():
        name = str(error["loc"][0]) if error["loc"] else ""
        variable = f"XLREC_{name.upper()}" if name else "XLREC_* settings"
        message = error["msg"].removeprefix("Value error, ")
        if message[1:2].islower():  # "Input should be ..." reads as the rest of the line
            message = message[:1].lower() + message[1:]
        shown = "" if name in SECRET_FIELDS or error["input"] is None else f"={error['input']!s}"
        field = Settings.model_fields.get(name)
        if error["type"] == "path_not_file":
            fix = "; point it at an existing file or unset it"
        elif field is not None and field.default is not None and not callable(field.default_factory):
            fix = f"; fix it or unset it for the default ({field.default})"
        else:
            fix = ""
        lines.append(message if message.startswith(variable) else f"{variable}{shown}: {message}{fix}")
    return lines
