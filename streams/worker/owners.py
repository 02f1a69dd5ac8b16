"""Which worker holds a user's partition: the user routes (`GET /users/{id}/recommendations`,
`/profile`) answer on any worker by asking the holder (streams.worker.web).

A user's partition is murmur2(user_id) % partitions (`WorkerContext.home_partition`: the SDK's
partitioner; events that arrive on another partition are re-routed there). This worker answers
for a partition it holds with its table recovered (`WorkerContext.owned`), and for no other:
a partition that moved away in a rebalance is not answered from what is left of it here.

Who else holds it is Faust's partition assignor's answer, as for Faust's table routing
(`app.router.key_store`): every assignment carries, for each member, its web URL (Faust's
`canonical_url`, `Settings.web_url`) and the changelog partitions it holds as active
(`app.assignor.changelog_distribution`); the users table's changelog partition is the user's
partition. That map is the one of the last assignment this worker took part in; during a
rebalance it may name a worker that just lost the partition, which then answers 503 (it never
serves a partition it does not hold), as does a partition assigned here and not recovered yet.
"""

from __future__ import annotations

from yarl import URL

from streams.worker.context import WorkerContext
from streams.worker.web import Location


class Owners:
    """Locates the worker that answers for a user (`streams.worker.web.Location`)."""

    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx

    @property
    def changelog_topic(self) -> str:
        return self.ctx.users.changelog_topic.get_topic_name()

    def own_url(self) -> str:
        return str(self.ctx.app.conf.canonical_url)

    def holder(self, partition: int) -> str | None:
        """The web URL of the worker the last assignment gave the partition to, or None."""
        topic = self.changelog_topic
        distribution = getattr(self.ctx.app.assignor, "changelog_distribution", None) or {}
        for url, tps in distribution.items():
            if partition in tps.get(topic, ()):
                return str(url)
        return None

    def locate(self, user_id: str) -> Location:
        ctx = self.ctx
        partition = ctx.home_partition(user_id)
        if partition in ctx.owned:
            return Location(partition)
        url = self.holder(partition)
        if url is None:
            return Location(partition, unavailable=f"no worker holds partition {partition} of user "
                                                   f"{user_id[:128]!r} now (the group is starting or rebalancing)")
        if _same(url, self.own_url()):
            return Location(partition, unavailable=f"this worker does not hold partition {partition} of user "
                                                   f"{user_id[:128]!r} yet (its table is being recovered) or "
                                                   "any more (a rebalance is under way)")
        return Location(partition, url=url)


def _same(a: str, b: str) -> bool:
    ua, ub = URL(a), URL(b)
    return (ua.host, ua.port) == (ub.host, ub.port)
