"""`xlrec forget USER_ID`: erase a user (right to erasure, streams.worker.privacy)."""

from __future__ import annotations

import typer


def forget(user_id: str = typer.Argument(..., help="The user to erase")) -> None:
    """Erase a user: their profile (a tombstone in the users table's changelog), latest
    recommendation, impressions and waiting review texts, in order after their earlier events."""
    from rich.markup import escape

    from streams.contracts.schemas import InvalidEvent
    from streams.contracts.topics import BrokerUnavailable
    from streams.sdk.cli import console, fail
    from streams.sdk.producer import DeliveryError, EventProducer

    try:
        with EventProducer() as producer:
            request = producer.forget(user_id)
    except (BrokerUnavailable, DeliveryError, InvalidEvent) as exc:
        fail(str(exc))
    console.print(f"forget request {request.forget_id} for user {escape(user_id)!s} sent; the worker "
                  "erases the user when it reaches it (GET /users/<id>/profile then answers 404)",
                  highlight=False)
