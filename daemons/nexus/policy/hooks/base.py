"""What every hook is: a pure or an I/O hook over a ``HookContext``.  Pure.

A hook is built once per snapshot from its ``HookConfig`` (see ``registry``)
and then evaluated for many exchanges, possibly from several threads, so it
keeps no per-request state.

- ``PureHook.evaluate(ctx) -> Verdict`` decides from the exchange alone.
- ``IOHook.run(ctx)`` is a generator: it yields ``Command`` objects, receives
  the reply to each (``CounterReply``, ``WebhookReply``), and returns its
  ``Verdict``.  It never sees ``Timeout`` or ``Failure``: the pipeline closes
  the generator and applies the hook's fail behavior instead.

A hook that cannot decide raises ``HookError`` (or anything else: the
pipeline treats every exception from a hook alike, through its fail behavior).

``HookContext`` is what a hook reads: the exchange, ``segments`` (the text
as it stands, with the redactions of earlier hooks applied), the tags earlier
hooks found, and ``findings()``, the union scanner's findings over the text as
the exchange brought it, computed once per stage.  Content hooks judge that
original text, so a redaction by one never hides a match from another; the
pipeline keeps every redaction in the exchange's own offsets (``redact``) and
renders the text once for whoever reads ``segments``.
"""

from __future__ import annotations

import abc
from collections.abc import Generator, Iterable, Mapping

import attrs

from nexus.policy.commands import Command, Reply
from nexus.policy.config import HookConfig, RuleOverride
from nexus.policy.exchange import Exchange, Locator, Segment
from nexus.policy.matching import Finding, RuleIndex
from nexus.policy.rules.model import Rule
from nexus.policy.verdict import Span, Verdict, apply_spans, merge_spans, to_source

__all__ = ["BuildEnv", "Hook", "HookContext", "HookError", "IOHook", "PureHook"]


class HookError(Exception):
    """A hook could not reach a decision; its fail behavior decides instead."""


@attrs.frozen
class BuildEnv:
    """What hook factories may read: every rule of the snapshot, by id."""

    rules: Mapping[str, Rule]


class HookContext:
    __slots__ = ("_findings", "_index", "_org", "_spans", "_view", "exchange", "tags")

    def __init__(self, exchange: Exchange, index: RuleIndex, org: Mapping[str, RuleOverride]) -> None:
        self.exchange = exchange
        self.tags: set[str] = set(exchange.classifications)
        self._index = index
        self._org = org
        self._findings: tuple[Finding, ...] | None = None
        self._spans: dict[Locator, list[Span]] = {}
        self._view: tuple[Segment, ...] | None = None

    @property
    def segments(self) -> tuple[Segment, ...]:
        """The text as it stands: the exchange's segments with every redaction so far applied."""
        if not self._spans:
            return self.exchange.segments
        view = self._view
        if view is None:
            spans = self._spans
            view = self._view = tuple(
                Segment(s.locator, apply_spans(s.text, merge_spans(spans[s.locator]))) if s.locator in spans else s
                for s in self.exchange.segments
            )
        return view

    def findings(self) -> tuple[Finding, ...]:
        found = self._findings
        if found is None:
            found = self._findings = self._index.findings(self.exchange.segments, self._org)
        return found

    def redact(self, spans: Iterable[Span], *, in_view: bool) -> tuple[Span, ...]:
        """Record redactions and return them in the exchange's own offsets.

        ``in_view``: the offsets are in ``segments`` as a hook read them (a
        webhook's answer), not in the exchange's text (a finding).  A span that
        does not fit its text raises ``ValueError`` and records nothing.
        """
        texts = {s.locator: s.text for s in (self.segments if in_view else self.exchange.segments)}
        applied: dict[Locator, list[Span]] = {}
        out = []
        for s in spans:
            text = texts.get(s.locator)
            if text is None:
                raise ValueError(f"span names no segment: {s.locator!r}")
            if not 0 <= s.start < s.end <= len(text):
                raise ValueError(f"span [{s.start}, {s.end}) does not fit a text of {len(text)} characters")
            if in_view and s.locator in self._spans:
                layer = applied.get(s.locator)
                if layer is None:
                    layer = applied[s.locator] = merge_spans(self._spans[s.locator])
                s = to_source(s, layer)
            out.append(s)
        for s in out:
            self._spans.setdefault(s.locator, []).append(s)
        self._view = None
        return tuple(out)

    def rewrites(self) -> tuple[Segment, ...]:
        """The segments whose text changed, as they now read."""
        if not self._spans:
            return ()
        return tuple(s for s in self.segments if s.locator in self._spans)


class Hook:
    """A built hook and its config."""

    __slots__ = ("config",)

    def __init__(self, config: HookConfig) -> None:
        self.config = config


class PureHook(Hook, abc.ABC):
    __slots__ = ()

    @abc.abstractmethod
    def evaluate(self, ctx: HookContext) -> Verdict: ...


class IOHook(Hook, abc.ABC):
    __slots__ = ()

    @abc.abstractmethod
    def run(self, ctx: HookContext) -> Generator[Command, Reply, Verdict]: ...
