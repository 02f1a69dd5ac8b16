"""The dead-letter contract: what each letter on the dlq topic carries, written by the worker
(`streams.worker.dlq`) and read by `xlrec tail dlq` and `xlrec dlq replay`.

Value and key: the original message's bytes, untouched, unless the letter had to be cut to fit
(then `xlrec-truncated` names what was cut and the `xlrec-original-*` headers give the original's
size and sha256; such a letter is evidence, never replayable). Headers, all prefixed `xlrec-`:
`source-topic`, `source-partition`, `source-offset` (where it was read), `reason` (a short code,
also the metrics label), `error` (one readable line), `failed-ts` (unix seconds).
A message re-sent by `xlrec dlq replay` carries `xlrec-replayed-from` = `dlq-topic:partition:offset`.
"""

from __future__ import annotations

from typing import Any

HEADER_PREFIX = "xlrec-"
SOURCE_TOPIC = f"{HEADER_PREFIX}source-topic"
TRUNCATED = f"{HEADER_PREFIX}truncated"
REPLAYED_FROM = f"{HEADER_PREFIX}replayed-from"


def parse_headers(headers: Any) -> dict[str, str]:
    """Dead-letter headers as a dict without the prefix (`reason`, `error`, `source-topic`, ...)."""
    items = headers.items() if isinstance(headers, dict) else headers or []
    return {k.removeprefix(HEADER_PREFIX): (v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v))
            for k, v in items if k.startswith(HEADER_PREFIX)}
