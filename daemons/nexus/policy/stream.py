"""Response hooks over a streamed answer: the ``StreamGuard``.  Pure.

The shell decodes the upstream stream into canonical chunks and passes each
through the guard::

    guard = StreamGuard(pipeline, exchange)      # a response-stage exchange
    for chunk in chunks:
        step = guard.feed(chunk)
        send(step.release)                       # chunks to forward now, in order
        if step.decision is not None:            # blocked: end with the dialect's error frame
            ...
    decision = drive(guard.finish(), perform)    # the final run (may yield commands)
    if decision.blocked: send the error frame
    else: send(guard.release(decision))          # whatever the guard still holds

The guard's mode is the strictest ``stream_mode`` among the response hooks
the exchange runs:

``observe``
    chunks pass unchanged at once; the content hooks scan each channel with a
    stream scan (matches across chunk borders are found) and the final
    decision is recorded with ``enforced=False``.
``incremental``
    the content hooks in this mode scan as chunks pass.  A block ends the
    stream at once: ``feed`` returns the decision and the shell sends the
    error frame.  Redaction: the guard holds back the last ``holdBackChars``
    characters of each channel (default and maximum: the widest match a rule
    may have, so every match is found before any of its text leaves) and
    releases text only behind that window, masked.  A match reported after
    part of it was released (a window set smaller than the match) masks only
    what is still held; the decision says how many were late.  Chunks from the
    first ``finish_reason`` on are held until the final decision, so a
    response blocked at the end never looks complete; the held text then
    leaves in one flush chunk before them.
``buffer``
    nothing leaves until the end; the final run sees the whole text and its
    redactions are applied to the buffered chunks.

Hooks that are not content hooks (webhook-forward, data-residency…) run in
the final run over the assembled text in every mode.  Outside ``buffer`` mode
their block ends the stream with an error frame at the end, but their
redactions cannot reach text already sent and are recorded only: set such a
hook's ``stream_mode`` to ``buffer`` to let it rewrite streamed answers.

Channels are the assembled-response locators of ``chunk_texts``; the final
run's segments use them, so its rewrites name the same places.

Resource handling: each channel holds a Hyperscan stream; ``finish()`` closes
them all, so call it after a block too (its run then returns the block
decision at once).  A guard dropped early frees its streams when collected.

Errors: ``PipelineError`` when ``feed`` follows ``finish``, ``finish`` comes
twice, or ``release`` comes before ``finish``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, Literal

import attrs

from nexus.policy.commands import Command, Reply
from nexus.policy.exchange import ChunkText, Exchange, Locator, Segment, apply_segments, chunk_texts
from nexus.policy.hooks.scanning import ScanHook
from nexus.policy.matching import Finding, RuleIndex
from nexus.policy.pipeline import BoundHook, Pipeline, PipelineError, Run, Steps
from nexus.policy.scan import StreamScan
from nexus.policy.verdict import Decision, Span, StageDecision, Verdict, apply_spans, merge_spans

__all__ = ["StreamGuard", "StreamStep"]

Mode = Literal["observe", "incremental", "buffer"]
Obj = dict[str, Any]
_now = time.perf_counter_ns


@attrs.frozen(slots=True)
class StreamStep:
    release: tuple[Obj, ...] = ()
    decision: StageDecision | None = None


_NOTHING = StreamStep()


class _Channel:
    """One text stream of the answer: what was sent, what is held, what must be masked."""

    __slots__ = ("base", "closed", "fed", "held", "late", "pending", "scan", "sent")

    def __init__(self, scan: StreamScan | None) -> None:
        self.scan = scan
        self.sent: list[str] = []
        self.held = ""
        self.base = 0
        self.fed = 0
        self.pending: list[Span] = []
        self.late = 0
        self.closed = False

    def mask(self, spans: Iterable[Span]) -> None:
        for s in spans:
            if s.end <= self.base:
                self.late += 1
            elif s.start < self.base:
                self.late += 1
                self.pending.append(attrs.evolve(s, start=self.base))
            else:
                self.pending.append(s)

    def take(self, upto: int) -> str:
        """Release the original text before offset ``upto`` (moved back out of any pending span), masked."""
        spans = merge_spans(self.pending) if self.pending else []
        for s in spans:
            if s.start < upto < s.end:
                upto = s.start
        if upto <= self.base:
            return ""
        base = self.base
        now = [attrs.evolve(s, start=s.start - base, end=s.end - base) for s in spans if s.end <= upto]
        self.pending = [s for s in spans if s.end > upto]
        text = self.held[: upto - base]
        if now:
            text = apply_spans(text, now)
        self.held = self.held[upto - base :]
        self.base = upto
        self.sent.append(text)
        return text

    def effective(self) -> str:
        """The text as it stands if the rest were released now (for the final run)."""
        held = self.held
        if self.pending:
            base = self.base
            held = apply_spans(
                held, [attrs.evolve(s, start=s.start - base, end=s.end - base) for s in merge_spans(self.pending)]
            )
        return "".join(self.sent) + held


class StreamGuard:
    """Runs the response hooks of one streamed answer."""

    __slots__ = (
        "_blocked",
        "_buffered",
        "_channels",
        "_exchange",
        "_findings",
        "_finished",
        "_hold",
        "_index",
        "_org",
        "_pipeline",
        "_queue",
        "_scan_hooks",
        "_scan_us",
        "_template",
        "_terminal",
        "_us",
        "mode",
    )

    def __init__(self, pipeline: Pipeline, exchange: Exchange) -> None:
        if exchange.stage != "response":
            raise ValueError("a stream guard runs response hooks: the exchange must be at the response stage")
        chain = pipeline.chain(exchange)
        modes = {b.config.stream_mode for b in chain}
        self.mode: Mode = "buffer" if "buffer" in modes else "incremental" if "incremental" in modes else "observe"
        self._pipeline = pipeline
        self._exchange = exchange
        self._index: RuleIndex = pipeline.index
        self._org = pipeline.index.for_org(exchange.org_id)
        self._scan_hooks: tuple[BoundHook, ...] = (
            tuple(b for b in chain if isinstance(b.hook, ScanHook)) if self.mode != "buffer" else ()
        )
        self._hold = max(
            (
                b.hook.hold_back
                for b in self._scan_hooks
                if isinstance(b.hook, ScanHook) and b.config.stream_mode == "incremental"
            ),
            default=0,
        )
        self._channels: dict[Locator, _Channel] = {}
        self._findings: dict[str, list[Finding]] = {b.config.id: [] for b in self._scan_hooks}
        self._us: dict[str, int] = dict.fromkeys(self._findings, 0)
        self._scan_us = 0
        self._queue: list[tuple[Obj, list[ChunkText]]] = []
        self._template: Obj | None = None
        self._terminal = False
        self._blocked: StageDecision | None = None
        self._finished = False
        self._buffered: dict[Locator, list[str]] = {}

    # -- feeding ------------------------------------------------------------------------------

    def feed(self, chunk: Obj) -> StreamStep:
        """Account for one canonical chunk; return what to forward now and, if blocked, the decision."""
        if self._finished:
            raise PipelineError("feed() after finish()")
        if self._blocked is not None:
            return StreamStep((), self._blocked)
        self._template = chunk
        texts = chunk_texts(chunk)
        if self.mode == "buffer":
            self._queue.append((chunk, texts))
            for t in texts:
                self._buffered.setdefault(t.channel, []).append(t.text)
            return _NOTHING
        for t in texts:
            ch = self._channel(t.channel)
            ch.held += t.text
            ch.fed += len(t.text)
            if ch.scan is not None:
                t0 = _now()
                matches = ch.scan.feed(t.text)
                self._scan_us += (_now() - t0) // 1000
                self._scanned(t.channel, ch, matches)
        finished = _finished_choices(chunk)
        for c in finished:
            self._close(c)
        if self._blocked is not None:
            return StreamStep((), self._blocked)
        if self.mode == "observe":
            for t in texts:
                ch = self._channels[t.channel]
                ch.take(ch.fed)
            return StreamStep((chunk,))
        if finished:
            self._terminal = True
        if self._terminal:
            # Its text stays held and leaves in the flush chunk before the queued chunks.
            blank = [Segment(t.locator, "") for t in texts]
            self._queue.append((apply_segments(chunk, blank) if blank else chunk, []))
            return _NOTHING
        rewrites = []
        for t in texts:
            ch = self._channels[t.channel]
            text = ch.take(ch.fed - self._hold)
            if text != t.text:
                rewrites.append(Segment(t.locator, text))
        return StreamStep((apply_segments(chunk, rewrites) if rewrites else chunk,))

    def _channel(self, channel: Locator) -> _Channel:
        ch = self._channels.get(channel)
        if ch is None:
            ch = self._channels[channel] = _Channel(self._index.stream() if self._scan_hooks else None)
        return ch

    def _close(self, choice: object) -> None:
        for channel, ch in self._channels.items():
            if channel[1] == choice and not ch.closed:
                ch.closed = True
                if ch.scan is not None:
                    t0 = _now()
                    matches = ch.scan.close()
                    self._scan_us += (_now() - t0) // 1000
                    self._scanned(channel, ch, matches)

    def _scanned(self, channel: Locator, ch: _Channel, matches: list[Any]) -> None:
        if not matches or self._blocked is not None:
            return
        t0 = _now()
        found: list[Finding] = []
        RuleIndex.place(found, matches, channel, self._org)
        self._scan_us += (_now() - t0) // 1000
        for b in self._scan_hooks:
            hook = b.hook
            assert isinstance(hook, ScanHook)
            mine = [f for f in found if f.rule_id in hook.rules]
            if not mine:
                continue
            t0 = _now()
            self._findings[b.config.id].extend(mine)
            verdict = hook.judge(mine)
            self._us[b.config.id] += (_now() - t0) // 1000
            if self.mode != "incremental" or b.config.stream_mode != "incremental":
                continue
            if verdict.decision.blocks:
                self._blocked = self._block_decision()
                return
            if verdict.decision is Decision.MODIFY:
                ch.mask(verdict.spans)

    def _precomputed(self) -> dict[str, tuple[Verdict, int]]:
        # The shared stream scan is charged to the first content hook, as the union scan is in a plain run.
        out = {}
        extra = self._scan_us
        for b in self._scan_hooks:
            hook = b.hook
            assert isinstance(hook, ScanHook)
            out[b.config.id] = (hook.judge(self._findings[b.config.id]), self._us[b.config.id] + extra)
            extra = 0
        return out

    def _block_decision(self) -> StageDecision:
        # Only the content hooks have run: a run over them alone, all precomputed, issues no command.
        run = self._pipeline.start(
            self._final_exchange(), streaming=True, precomputed=self._precomputed(), chain=self._scan_hooks
        )
        decision = run.next()
        assert isinstance(decision, StageDecision)
        return attrs.evolve(decision, rewrites=())

    # -- the end ------------------------------------------------------------------------------

    def _final_exchange(self) -> Exchange:
        if self.mode == "buffer":
            segments = tuple(Segment(loc, "".join(parts)) for loc, parts in self._buffered.items())
        else:
            segments = tuple(Segment(loc, ch.effective()) for loc, ch in self._channels.items())
        return self._exchange.with_segments(segments)

    def finish(self) -> Steps:
        """The final run over the whole answer; drive it like any run, then call ``release``."""
        if self._finished:
            raise PipelineError("finish() called twice")
        self._finished = True
        if self._blocked is not None:
            self._discard()
            return _Done(self._blocked)
        if self.mode == "buffer":
            return self._pipeline.start(self._final_exchange(), streaming=True)
        for channel in self._channels:
            self._close(channel[1])
        if self._blocked is not None:
            self._discard()
            return _Done(self._blocked)
        return _Adjusted(
            self._pipeline.start(self._final_exchange(), streaming=True, precomputed=self._precomputed()),
            late=sum(ch.late for ch in self._channels.values()),
            guard_us=self._scan_us + sum(self._us.values()),
        )

    def _discard(self) -> None:
        for ch in self._channels.values():
            if not ch.closed:
                ch.closed = True
                if ch.scan is not None:
                    ch.scan.close()

    def release(self, decision: StageDecision) -> list[Obj]:
        """What is left to forward after the final ``decision`` (nothing if it blocked)."""
        if not self._finished:
            raise PipelineError("release() before finish()")
        if decision.blocked:
            self._queue.clear()
            return []
        if self.mode == "buffer":
            return self._release_buffer(decision)
        out: list[Obj] = []
        flush = self._flush()
        if flush is not None:
            out.append(flush)
        out.extend(chunk for chunk, _ in self._queue)
        self._queue.clear()
        return out

    def _flush(self) -> Obj | None:
        by_choice: dict[Any, Obj] = {}
        for channel, ch in self._channels.items():
            text = ch.take(ch.fed)
            if not text:
                continue
            delta = by_choice.setdefault(channel[1], {})
            field = channel[3]
            if field == "tool_calls":
                delta.setdefault("tool_calls", []).append({"index": channel[4], "function": {"arguments": text}})
            else:
                delta[str(field)] = text
        if not by_choice:
            return None
        template = self._queue[0][0] if self._queue else self._template or {}
        head: Obj = {k: template[k] for k in ("id", "object", "created", "model") if k in template}
        head["choices"] = [{"index": c, "delta": d, "finish_reason": None} for c, d in by_choice.items()]
        return head

    def _release_buffer(self, decision: StageDecision) -> list[Obj]:
        rewritten = {s.locator: s.text for s in decision.rewrites}
        out = []
        placed: set[Locator] = set()
        for chunk, texts in self._queue:
            changes = []
            for t in texts:
                if t.channel not in rewritten:
                    continue
                changes.append(Segment(t.locator, "" if t.channel in placed else rewritten[t.channel]))
                placed.add(t.channel)
            out.append(apply_segments(chunk, changes) if changes else chunk)
        self._queue.clear()
        return out


def _finished_choices(chunk: Obj) -> list[Any]:
    choices = chunk.get("choices")
    if not isinstance(choices, list):
        return []
    return [
        c.get("index", i) for i, c in enumerate(choices) if isinstance(c, dict) and c.get("finish_reason") is not None
    ]


class _Done:
    """A finished run: the stream was blocked before the end."""

    __slots__ = ("_decision",)

    def __init__(self, decision: StageDecision) -> None:
        self._decision = decision

    def next(self) -> Command | StageDecision:
        return self._decision

    def send(self, reply: Reply) -> Command | StageDecision:
        raise PipelineError("no command is outstanding")


class _Adjusted:
    """The final run of a non-buffered stream: its rewrites cannot reach text already sent."""

    __slots__ = ("_guard_us", "_late", "_run")

    def __init__(self, run: Run, late: int, guard_us: int) -> None:
        self._run = run
        self._late = late
        self._guard_us = guard_us

    def _fix(self, step: Command | StageDecision) -> Command | StageDecision:
        if not isinstance(step, StageDecision):
            return step
        reasons = step.reasons
        if step.rewrites:
            reasons = (*reasons, "redactions of hooks outside the stream scan were not applied to the streamed text")
        if self._late:
            reasons = (*reasons, f"{self._late} redaction(s) found after part of the text was sent")
        return attrs.evolve(step, rewrites=(), reasons=reasons, elapsed_us=step.elapsed_us + self._guard_us)

    def next(self) -> Command | StageDecision:
        return self._fix(self._run.next())

    def send(self, reply: Reply) -> Command | StageDecision:
        return self._fix(self._run.send(reply))
