"""``webhook-forward``: POST the exchange to an external service and take its decision.

Pure: the hook yields ``CallWebhook`` and the shell performs the POST within the
hook's timeout; a timeout, a transport error, a non-2xx status or an answer
that does not parse goes through the hook's fail behavior.

Options: ``url`` (http or https), ``headers`` (added to the POST, e.g. an
authorization token), ``sendText`` (default true; false sends metadata only).

Request body (JSON)::

    {"stage": "request", "ingress": "gateway", "requestId": ..., "orgId": ...,
     "projectId": ..., "keyId": ..., "userId": ..., "sourceIp": ..., "host": ...,
     "providerType": ..., "providerId": ..., "providerRegion": ..., "model": ...,
     "bodySize": 1234, "tags": [...],
     "segments": [{"locator": ["messages", 0, "content"], "text": "..."}]}

Answer::

    {"decision": "approve" | "redact" | "block" | "block_soft" | "abstain",
     "reason": "...", "reasonCode": "...",
     "redactions": [{"segment": 0, "start": 4, "end": 9, "replacement": "[X]", "ruleId": "..."}]}

``block`` (also ``reject``, ``reject_hard``, ``deny``) rejects hard;
``redact`` (or ``modify``) masks each redaction: ``segment`` indexes the sent
``segments`` (default 0), ``start``/``end`` are character offsets in its text,
``replacement`` defaults to ``[REDACTED_<ruleId>]`` (``ruleId`` defaults to
``WEBHOOK``).  Redactions outside a segment make the answer invalid.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from typing import Any
from urllib.parse import urlsplit

import attrs
import orjson

from nexus.policy.commands import CallWebhook, Command, Reply, WebhookReply
from nexus.policy.config import HookConfig, PolicyConfigError, structure_options
from nexus.policy.exchange import Segment
from nexus.policy.hooks.base import BuildEnv, HookContext, HookError, IOHook
from nexus.policy.verdict import ABSTAIN, Decision, Span, Verdict, placeholder

_DECISIONS = {
    "approve": Decision.APPROVE,
    "allow": Decision.APPROVE,
    "redact": Decision.MODIFY,
    "modify": Decision.MODIFY,
    "block": Decision.REJECT_HARD,
    "reject": Decision.REJECT_HARD,
    "reject_hard": Decision.REJECT_HARD,
    "deny": Decision.REJECT_HARD,
    "block_soft": Decision.BLOCK_SOFT,
    "abstain": Decision.ABSTAIN,
}


@attrs.frozen(kw_only=True)
class WebhookOptions:
    url: str
    headers: dict[str, str] = attrs.field(factory=dict)
    send_text: bool = True


class WebhookForward(IOHook):
    __slots__ = ("headers", "send_text", "url")

    def __init__(self, config: HookConfig, options: WebhookOptions) -> None:
        super().__init__(config)
        self.url = options.url
        self.headers = (("content-type", "application/json"), *sorted(options.headers.items()))
        self.send_text = options.send_text

    def body(self, ctx: HookContext) -> bytes:
        ex = ctx.exchange
        doc: dict[str, Any] = {
            "stage": ex.stage,
            "ingress": ex.ingress,
            "requestId": ex.request_id,
            "orgId": ex.org_id,
            "projectId": ex.project_id,
            "keyId": ex.key_id,
            "userId": ex.user_id,
            "sourceIp": ex.source_ip,
            "host": ex.host,
            "providerType": ex.provider_type,
            "providerId": ex.provider_id,
            "providerRegion": ex.provider_region,
            "model": ex.model,
            "bodySize": ex.body_size,
            "tags": sorted(ctx.tags),
        }
        if self.send_text:
            doc["segments"] = [{"locator": list(s.locator), "text": s.text} for s in ctx.segments]
        return orjson.dumps(doc)

    def run(self, ctx: HookContext) -> Generator[Command, Reply, Verdict]:
        segments = ctx.segments
        reply = yield CallWebhook(self.url, self.body(ctx), self.headers)
        if not isinstance(reply, WebhookReply):
            raise HookError(f"expected a webhook reply, got {type(reply).__name__}")
        if not 200 <= reply.status < 300:
            raise HookError(f"webhook answered {reply.status}")
        try:
            answer = orjson.loads(reply.body)
        except orjson.JSONDecodeError:
            raise HookError("webhook answer is not JSON") from None
        if not isinstance(answer, dict):
            raise HookError("webhook answer is not an object")
        return _verdict(answer, segments if self.send_text else ())


def _verdict(answer: Mapping[str, Any], segments: tuple[Segment, ...]) -> Verdict:
    name = answer.get("decision")
    decision = _DECISIONS.get(name.lower()) if isinstance(name, str) else None
    if decision is None:
        raise HookError(f"webhook decision {name!r} is not one of {sorted(_DECISIONS)}")
    if decision is Decision.ABSTAIN:
        return ABSTAIN
    reason = answer.get("reason")
    code = answer.get("reasonCode")
    reasons = (reason,) if isinstance(reason, str) and reason else ()
    reason_code = code if isinstance(code, str) and code else None
    spans: tuple[Span, ...] = ()
    if decision is Decision.MODIFY:
        spans = _spans(answer.get("redactions"), segments)
        if not spans:
            decision = Decision.APPROVE
    rule_ids = tuple(dict.fromkeys(s.rule_id for s in spans))
    return Verdict(decision, reasons, rule_ids, spans, reason_code=reason_code)


def _spans(items: object, segments: tuple[Segment, ...]) -> tuple[Span, ...]:
    if items is None:
        return ()
    if not isinstance(items, list):
        raise HookError("webhook redactions must be a list")
    out = []
    for item in items:
        if not isinstance(item, dict):
            raise HookError("a webhook redaction must be an object")
        index, start, end = item.get("segment", 0), item.get("start"), item.get("end")
        if type(index) is not int or type(start) is not int or type(end) is not int:
            raise HookError("a webhook redaction needs integer segment, start and end")
        if not 0 <= index < len(segments) or not 0 <= start < end <= len(segments[index].text):
            raise HookError(f"webhook redaction {item!r} is outside the text it was sent")
        rule_id = item.get("ruleId")
        if not isinstance(rule_id, str) or not rule_id:
            rule_id = "WEBHOOK"
        replacement = item.get("replacement")
        if not isinstance(replacement, str):
            replacement = placeholder(rule_id)
        out.append(Span(segments[index].locator, start, end, rule_id, replacement))
    return tuple(out)


def build(config: HookConfig, env: BuildEnv) -> WebhookForward:
    options = structure_options(WebhookOptions, config)
    parts = urlsplit(options.url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PolicyConfigError(f"{config.label}: url must be an http(s) URL with a host")
    return WebhookForward(config, options)
