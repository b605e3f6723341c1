"""nexus.audit.capture: what each capture level keeps, cuts and spills."""

from __future__ import annotations

import hashlib

import pytest

from nexus.audit.capture import CapturePolicy, StreamCapture, capture
from nexus.audit.events import Payload, PayloadDigest, TrafficEvent
from nexus.config.schema import AuditConfig

BODY = b'{"messages": [{"role": "user", "content": "hi"}]}'


def test_full_keeps_the_body_itself_without_copying() -> None:
    kept = capture(CapturePolicy(), "request", BODY, content_type="application/json")
    assert kept == Payload(kind="request", size_bytes=len(BODY), body=BODY, content_type="application/json")
    assert isinstance(kept, Payload) and kept.body is BODY


def test_metadata_keeps_size_and_sha256_only() -> None:
    kept = capture(CapturePolicy(level="metadata"), "response", BODY, content_type="application/json")
    assert kept == PayloadDigest(kind="response", size_bytes=len(BODY), sha256=hashlib.sha256(BODY).hexdigest(),
                                 content_type="application/json")


def test_off_keeps_nothing_and_the_event_stays() -> None:
    event = TrafficEvent(source="gateway")
    event.attach(capture(CapturePolicy(level="off"), "request", BODY))
    assert event.payloads == [] and event.payload_digests == []


def test_attach_sorts_bodies_and_digests() -> None:
    event = TrafficEvent(source="gateway")
    event.attach(capture(CapturePolicy(), "request", BODY))
    event.attach(capture(CapturePolicy(level="metadata"), "response", BODY))
    assert [p.kind for p in event.payloads] == ["request"]
    assert [d.kind for d in event.payload_digests] == ["response"]


def test_bodies_past_body_max_are_cut_and_marked() -> None:
    policy = CapturePolicy(body_max=10)
    kept = capture(policy, "request", b"0123456789abcdef", redacted=True)
    assert isinstance(kept, Payload)
    assert kept.body == b"0123456789" and kept.size_bytes == 16 and kept.truncated and kept.redacted
    # The wire size can come from the caller when the body was already cut before us.
    upstream_cut = capture(policy, "request", b"0123", size_bytes=5000)
    assert isinstance(upstream_cut, Payload) and upstream_cut.truncated and upstream_cut.size_bytes == 5000


def test_spills_above_inline_max() -> None:
    policy = CapturePolicy(inline_max=256 * 1024)
    small = capture(policy, "request", b"x" * (256 * 1024))
    large = capture(policy, "request", b"x" * (256 * 1024 + 1))
    assert isinstance(small, Payload) and isinstance(large, Payload)
    assert not policy.spills(small)
    assert policy.spills(large)


def test_policy_from_config_and_narrowing() -> None:
    policy = CapturePolicy.from_config(AuditConfig(capture="metadata", inline_max=1024, body_max=4096,
                                                   stream_raw_max=2048))
    assert policy == CapturePolicy(level="metadata", inline_max=1024, body_max=4096, stream_raw_max=2048)
    assert policy.narrowed("off").level == "off"
    assert policy.narrowed("full") is policy
    with pytest.raises(ValueError, match="capture level"):
        CapturePolicy(level="everything")  # type: ignore[arg-type]


def test_stream_capture_assembles_text_and_bounds_raw_bytes() -> None:
    stream = StreamCapture(CapturePolicy(stream_raw_max=50))
    chunks = [f'data: {{"choices":[{{"delta":{{"content":"part {i} "}}}}]}}\n\n'.encode() for i in range(4)]
    for i, chunk in enumerate(chunks):
        stream.raw(chunk)
        stream.text(f"part {i} ")
    response, raw = stream.finish()
    assert isinstance(response, Payload) and isinstance(raw, Payload)
    assert response.kind == "response" and response.body == b"part 0 part 1 part 2 part 3 "
    assert not response.truncated
    joined = b"".join(chunks)
    assert raw.kind == "response_stream" and raw.content_type == "text/event-stream"
    assert raw.body == joined[:50] and raw.size_bytes == len(joined) and raw.truncated


def test_stream_capture_metadata_hashes_the_whole_stream() -> None:
    stream = StreamCapture(CapturePolicy(level="metadata", stream_raw_max=1))
    for chunk in (b"data: a\n\n", b"data: b\n\n"):
        stream.raw(chunk)
    stream.text("ab")
    text, raw = stream.finish()
    assert text == PayloadDigest(kind="response", size_bytes=2, sha256=hashlib.sha256(b"ab").hexdigest(),
                                 content_type="text/plain; charset=utf-8")
    assert isinstance(raw, PayloadDigest) and raw.sha256 == hashlib.sha256(b"data: a\n\ndata: b\n\n").hexdigest()
    assert StreamCapture(CapturePolicy(level="off")).finish() == []


def test_stream_capture_cuts_text_at_body_max() -> None:
    stream = StreamCapture(CapturePolicy(body_max=4))
    stream.text("héllo")
    response, _raw = stream.finish(redacted=True)
    assert isinstance(response, Payload)
    assert response.body == "héllo".encode()[:4] and response.size_bytes == 6 and response.truncated
    assert response.redacted
