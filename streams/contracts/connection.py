"""One Kafka connection config, rendered for each kind of client xlrec creates.

Modelled on Quix Streams' `ConnectionConfig`: the bootstrap servers and the security settings
(protocol, SASL mechanism/user/password, TLS files) are read once from `Settings`
(`Settings.connection()` or `ConnectionConfig.from_settings`) and rendered as
- `librdkafka()`: confluent-kafka's dict (SDK producer and consumer, admin, lag, tools);
- `aiokafka()`: keyword arguments of aiokafka's own clients (the worker's catalog feed);
- `faust_broker_urls()` / `faust_credentials()`: the Faust app's `broker` and
  `broker_credentials` (aiokafka transport).
The password is a `SecretStr`: it shows in no repr.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

if TYPE_CHECKING:
    import faust

    from streams.contracts.settings import Settings

# librdkafka logs through this logger: silent unless the application configures logging,
# so a user sees one clear error instead of a retry line every 50 ms.
KAFKA_LOG = logging.getLogger("xlrec.kafka")
KAFKA_LOG.addHandler(logging.NullHandler())

TLS_PROTOCOLS = ("SSL", "SASL_SSL")
SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")


def sasl_mechanism_problem(protocol: str | None, mechanism: str | None) -> str | None:
    """The one rule for SASL: a SASL protocol needs a mechanism (librdkafka would pick GSSAPI,
    aiokafka PLAIN: neither guess is safe). None when the pair is fine."""
    if protocol in SASL_PROTOCOLS and not mechanism:
        return (f"XLREC_SASL_MECHANISM is required with XLREC_SECURITY_PROTOCOL={protocol}; "
                "set it to PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")
    return None


@dataclass(frozen=True)
class ConnectionConfig:
    """Where Kafka is and how to authenticate to it, independent of the client library."""

    bootstrap: str
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None

    def __post_init__(self) -> None:
        problem = sasl_mechanism_problem(self.security_protocol, self.sasl_mechanism)
        if problem:
            raise ValueError(problem)

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectionConfig:
        return cls(bootstrap=settings.bootstrap, security_protocol=settings.security_protocol,
                   sasl_mechanism=settings.sasl_mechanism, sasl_username=settings.sasl_username,
                   sasl_password=settings.sasl_password, ssl_cafile=settings.ssl_cafile,
                   ssl_certfile=settings.ssl_certfile, ssl_keyfile=settings.ssl_keyfile)

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in TLS_PROTOCOLS

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol in SASL_PROTOCOLS

    def password(self) -> str:
        """The SASL password in clear ("" when unset): only for handing to a client."""
        return self.sasl_password.get_secret_value() if self.sasl_password else ""

    # ---- librdkafka (confluent-kafka) ----------------------------------------------------
    def librdkafka(self) -> dict[str, Any]:
        """confluent-kafka client settings, security included (add `group.id` etc. to a copy)."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap,
            "security.protocol": self.security_protocol,
            "logger": KAFKA_LOG,
        }
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
            conf["sasl.username"] = self.sasl_username or ""
            conf["sasl.password"] = self.password()
        for key, value in (("ssl.ca.location", self.ssl_cafile),
                           ("ssl.certificate.location", self.ssl_certfile),
                           ("ssl.key.location", self.ssl_keyfile)):
            if value:
                conf[key] = str(value)
        return conf

    # ---- aiokafka ------------------------------------------------------------------------
    def ssl_context(self) -> ssl.SSLContext:
        """TLS context for aiokafka and Faust, from the same files librdkafka reads."""
        from aiokafka.helpers import create_ssl_context

        return create_ssl_context(
            cafile=str(self.ssl_cafile) if self.ssl_cafile else None,
            certfile=str(self.ssl_certfile) if self.ssl_certfile else None,
            keyfile=str(self.ssl_keyfile) if self.ssl_keyfile else None)

    def aiokafka_security(self) -> dict[str, Any]:
        """Only the security keyword arguments of aiokafka's clients."""
        conf: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.uses_tls:
            conf["ssl_context"] = self.ssl_context()
        if self.uses_sasl:
            conf.update(sasl_mechanism=self.sasl_mechanism,
                        sasl_plain_username=self.sasl_username or "",
                        sasl_plain_password=self.password())
        return conf

    def aiokafka(self) -> dict[str, Any]:
        """Keyword arguments of aiokafka's clients: `bootstrap_servers` and security."""
        return {"bootstrap_servers": self.bootstrap, **self.aiokafka_security()}

    # ---- Faust (aiokafka transport) ------------------------------------------------------
    def faust_broker_urls(self) -> list[str]:
        """`host1:9092,host2:9092` -> Faust's `kafka://` URLs (aiokafka transport)."""
        return [f"kafka://{host.strip()}" for host in self.bootstrap.split(",") if host.strip()]

    def faust_credentials(self) -> faust.types.auth.CredentialsT | None:
        """Faust's `broker_credentials`: SASL and/or TLS; None for PLAINTEXT."""
        import faust

        if self.security_protocol == "PLAINTEXT":
            return None
        context = self.ssl_context() if self.uses_tls else None
        if self.security_protocol == "SSL":
            return faust.SSLCredentials(context)
        return faust.SASLCredentials(username=self.sasl_username or "", password=self.password(),
                                     mechanism=self.sasl_mechanism, ssl_context=context)
