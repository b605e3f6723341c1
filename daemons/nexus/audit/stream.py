"""The JetStream stream every event goes through: ``NEXUS_EVENTS``, subjects ``nexus.event.<kind>``.

Kinds: ``ai-traffic`` (gateway and proxy traffic events), ``agent`` (agents'
traffic events, republished by the hub), ``compliance`` and ``admin-audit``.
Emitters and the writer both *ensure* the stream with the same settings from
here (file storage, a retention of ``stream_max_age_days``, discard old, no byte
cap: when the server's store is full, publishes fail and emitters spool rather
than the stream silently dropping old events).  Tests use their own name and
prefix on a shared server.

Error handling: whatever ``JetStream.ensure_stream`` raises (``NatsError``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from nexus.audit.events import TRAFFIC_KINDS
from nexus.config.schema import AuditConfig

if TYPE_CHECKING:
    # Only a parameter type: the stream's names stay importable without Trio (``nexus traffic``).
    from nexus.net.nats.jetstream import JetStream

__all__ = ["EVENTS", "EventStream", "ensure_stream"]

_DAY_S = 86_400.0


@attrs.frozen
class EventStream:
    name: str = "NEXUS_EVENTS"
    prefix: str = "nexus.event"

    @property
    def subjects(self) -> list[str]:
        return [f"{self.prefix}.>"]

    def subject(self, kind: str) -> str:
        return f"{self.prefix}.{kind}"

    @property
    def traffic_subjects(self) -> frozenset[str]:
        return frozenset(self.subject(kind) for kind in TRAFFIC_KINDS)


EVENTS = EventStream()


async def ensure_stream(js: JetStream, stream: EventStream, config: AuditConfig) -> None:
    await js.ensure_stream(stream.name, stream.subjects, max_age=config.stream_max_age_days * _DAY_S, storage="file")
