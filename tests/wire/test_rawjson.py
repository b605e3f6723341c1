"""Top-level edits of raw bodies: only the model (and stream_options) change, byte for byte."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nexus.wire.errors import WireError
from nexus.wire.rawjson import ensure_stream_usage, passthrough, rewrite_model


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"model":"gpt-4o","messages":[]}', b'{"model":"claude","messages":[]}'),
        # Whitespace and formatting around the value stay as they were.
        (
            b'{\n  "messages": [],\n  "model" :\t"gpt-4o" ,\n  "n": 1.50\n}',
            b'{\n  "messages": [],\n  "model" :\t"claude" ,\n  "n": 1.50\n}',
        ),
        # Nested "model" keys, and "model" inside strings, are left alone.
        (
            b'{"messages":[{"role":"user","content":"{\\"model\\":\\"x\\"}"}],"meta":{"model":"keep"},"model":"a"}',
            b'{"messages":[{"role":"user","content":"{\\"model\\":\\"x\\"}"}],"meta":{"model":"keep"},"model":"claude"}',
        ),
        (
            b'{"tools":[{"function":{"parameters":{"properties":{"model":{"type":"string"}}}}}],"model":"a"}',
            b'{"tools":[{"function":{"parameters":{"properties":{"model":{"type":"string"}}}}}],"model":"claude"}',
        ),
        # A key that ends in an escaped quote followed by model is not the model key.
        (b'{"a\\"model":"no","model":"a"}', b'{"a\\"model":"no","model":"claude"}'),
        # An escaped spelling of the key is still the key; every duplicate is replaced.
        (b'{"model":"a","mod\\u0065l":"b"}', b'{"model":"claude","mod\\u0065l":"claude"}'),
        # Escaped quotes in the old value, non-ASCII around it.
        (b'{"x":"\xc3\xa9t\xc3\xa9","model":"we\\"ird"}', b'{"x":"\xc3\xa9t\xc3\xa9","model":"claude"}'),
        # A non-string model is replaced too; a missing one is added.
        (b'{"model":null}', b'{"model":"claude"}'),
        (b'{"messages":[]}', b'{"model":"claude","messages":[]}'),
        (b"  {   }  ", b'  {"model":"claude"   }  '),
    ],
)
def test_rewrite_model(body: bytes, expected: bytes) -> None:
    assert rewrite_model(body, "claude") == expected


def test_new_model_is_json_escaped() -> None:
    out = rewrite_model(b'{"model":"a"}', 'we"ird\\ñame')
    assert orjson.loads(out)["model"] == 'we"ird\\ñame'


@pytest.mark.parametrize(
    "body",
    [b"", b"[]", b'"model"', b'{"model":"a"', b'{"model":"a"} x', b'{"model" "a"}', b'{"a":1,}', b'{model:"a"}'],
)
def test_invalid_bodies_raise(body: bytes) -> None:
    with pytest.raises(WireError) as info:
        rewrite_model(body, "m")
    assert info.value.kind == "invalid_request"


@pytest.mark.parametrize(
    ("body", "expected", "added"),
    [
        (b'{"model":"m","stream":true}', b'{"stream_options":{"include_usage":true},"model":"m","stream":true}', True),
        (b'{"stream":false}', b'{"stream":false}', False),
        (b'{"model":"m"}', b'{"model":"m"}', False),
        (
            b'{"stream":true,"stream_options":{"include_usage":true}}',
            b'{"stream":true,"stream_options":{"include_usage":true}}',
            False,
        ),
        (
            b'{"stream":true,"stream_options":{"include_obfuscation":false}}',
            b'{"stream":true,"stream_options":{"include_obfuscation":false,"include_usage":true}}',
            True,
        ),
        (
            b'{"stream":true,"stream_options":{"include_usage":false}}',
            b'{"stream":true,"stream_options":{"include_usage":true}}',
            True,
        ),
        # "stream" nested somewhere else does not count.
        (b'{"metadata":{"stream":true}}', b'{"metadata":{"stream":true}}', False),
    ],
)
def test_ensure_stream_usage(body: bytes, expected: bytes, added: bool) -> None:
    assert ensure_stream_usage(body) == (expected, added)


def test_passthrough_does_both_in_one_pass() -> None:
    body = b'{"messages":[{"role":"user","content":"hi"}],"model":"alias","stream":true}'
    out, added = passthrough(body, "gpt-4o-2024-08-06")
    assert added
    assert out == (
        b'{"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}],'
        b'"model":"gpt-4o-2024-08-06","stream":true}'
    )
    out, added = passthrough(b'{"stream":false}', "m")
    assert (out, added) == (b'{"model":"m","stream":false}', False)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["model", "stream", "a", 'b"', "ü"]) | st.text(max_size=5), children, max_size=4
        )
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    members=st.dictionaries(
        st.sampled_from(["model", "stream", "messages", "x", "mödel", "stream_options"]) | st.text(max_size=6),
        json_values,
        max_size=6,
    ),
    indent=st.sampled_from([None, 1]),
    model=st.text(max_size=20),
)
def test_rewrite_model_property(members: dict[str, Any], indent: int | None, model: str) -> None:
    # The body is laid out around a placeholder, so the model value's bytes are known exactly.
    mark = json.dumps("\x00MARK")
    ascii_only = bool(indent)
    skeleton = json.dumps(
        {**members, "model": "\x00MARK"} if "model" in members else members, indent=indent, ensure_ascii=ascii_only
    )
    old = json.dumps(members.get("model"), ensure_ascii=ascii_only)
    body = skeleton.replace(mark, old).encode()
    out = rewrite_model(body, model)
    if "model" in members:
        assert out == skeleton.encode().replace(mark.encode(), orjson.dumps(model))
    else:
        assert json.loads(out) == {"model": model, **members}
        assert out.endswith(body[1:])

    usage_out, added = ensure_stream_usage(body)
    wants = members.get("stream") is True
    current = members.get("stream_options")
    already = isinstance(current, dict) and current.get("include_usage") is True
    assert added == (wants and not already)
    if wants:
        parsed = json.loads(usage_out)
        assert parsed["stream_options"]["include_usage"] is True
        assert {k: v for k, v in parsed.items() if k != "stream_options"} == {
            k: v for k, v in members.items() if k != "stream_options"
        }
    else:
        assert usage_out == body
