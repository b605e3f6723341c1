"""The Gemini dialect of the mock, over a real socket with httpx (no official SDK installed)."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import jsonschema_rs

MODEL = "/v1beta/models/gemini-2.5-flash"


def user(*parts: dict[str, Any]) -> dict[str, Any]:
    return {"contents": [{"role": "user", "parts": list(parts)}]}


def sse_payloads(text: str) -> list[dict[str, Any]]:
    return [json.loads(block[len("data: ") :]) for block in text.split("\r\n\r\n") if block.startswith("data: ")]


def joined_text(chunks: list[dict[str, Any]], *, thought: bool = False) -> str:
    return "".join(
        p.get("text", "")
        for c in chunks
        for p in c["candidates"][0]["content"]["parts"]
        if bool(p.get("thought")) == thought
    )


async def test_generate_content_echo_and_usage(mock_url: str) -> None:
    body = user({"text": "Hello Gemini"})
    body["systemInstruction"] = {"parts": [{"text": "Be nice."}]}
    async with httpx.AsyncClient(base_url=mock_url) as http:
        resp = await http.post(f"{MODEL}:generateContent", json=body)
    assert resp.status_code == 200
    data = resp.json()
    candidate = data["candidates"][0]
    assert candidate["content"] == {"parts": [{"text": "Echo: Hello Gemini"}], "role": "model"}
    assert candidate["finishReason"] == "STOP"
    usage = data["usageMetadata"]
    assert usage["promptTokenCount"] == -(-len("Be nice.Hello Gemini") // 4)
    assert usage["candidatesTokenCount"] == -(-len("Echo: Hello Gemini") // 4)
    assert usage["totalTokenCount"] == usage["promptTokenCount"] + usage["candidatesTokenCount"]
    assert data["modelVersion"] == "gemini-2.5-flash"


async def test_sse_stream_and_json_array_stream(mock_url: str) -> None:
    body = user({"text": "stream please"})
    async with httpx.AsyncClient(base_url=mock_url, headers={"x-mock-chunks": "4"}) as http:
        sse = await http.post(f"{MODEL}:streamGenerateContent", params={"alt": "sse"}, json=body)
        array = await http.post(f"{MODEL}:streamGenerateContent", json=body)
    assert sse.headers["content-type"].startswith("text/event-stream")
    chunks = sse_payloads(sse.text)
    assert len(chunks) == 5
    assert joined_text(chunks) == "Echo: stream please"
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"
    assert "usageMetadata" in chunks[-1]
    assert array.headers["content-type"] == "application/json"
    items = json.loads(array.text)
    assert isinstance(items, list) and len(items) == 5
    assert joined_text(items) == "Echo: stream please"


async def test_function_call_then_function_response(mock_url: str) -> None:
    tools = [
        {
            "functionDeclarations": [
                {
                    "name": "find_restaurant",
                    "parameters": {
                        "type": "OBJECT",
                        "properties": {
                            "cuisine": {"type": "STRING", "enum": ["thai", "french"]},
                            "party_size": {"type": "INTEGER", "minimum": 2},
                            "location": {"type": "STRING"},
                        },
                        "required": ["cuisine", "party_size", "location"],
                    },
                }
            ]
        }
    ]
    first = {**user({"text": "dinner?"}), "tools": tools}
    after = {
        "contents": [
            {"role": "user", "parts": [{"text": "dinner?"}]},
            {"role": "model", "parts": [{"functionCall": {"name": "find_restaurant", "args": {}}}]},
            {
                "role": "user",
                "parts": [{"functionResponse": {"name": "find_restaurant", "response": {"name": "Chez Mock"}}}],
            },
        ],
        "tools": tools,
    }
    async with httpx.AsyncClient(base_url=mock_url) as http:
        call = (await http.post(f"{MODEL}:generateContent", json=first)).json()
        streamed = await http.post(f"{MODEL}:streamGenerateContent?alt=sse", json=first)
        answer = (await http.post(f"{MODEL}:generateContent", json=after)).json()
        none = await http.post(
            f"{MODEL}:generateContent",
            json={**first, "toolConfig": {"functionCallingConfig": {"mode": "NONE"}}},
        )
    fc = call["candidates"][0]["content"]["parts"][0]["functionCall"]
    assert fc["name"] == "find_restaurant"
    assert fc["args"] == {"cuisine": "thai", "party_size": 3, "location": "Paris, France"}
    streamed_parts = [p for c in sse_payloads(streamed.text) for p in c["candidates"][0]["content"]["parts"]]
    assert streamed_parts == [{"functionCall": fc}]
    assert "Chez Mock" in answer["candidates"][0]["content"]["parts"][0]["text"]
    assert "text" in none.json()["candidates"][0]["content"]["parts"][0]


async def test_response_schema_gives_valid_json(mock_url: str) -> None:
    schema = {
        "type": "object",
        "properties": {
            "recipes": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "minutes": {"type": "integer", "minimum": 5},
                        "vegan": {"type": "boolean"},
                        "ingredients": {"type": "array", "items": {"type": "string"}, "minItems": 3},
                    },
                    "required": ["name", "minutes", "vegan", "ingredients"],
                },
            }
        },
        "required": ["recipes"],
    }
    body = {
        **user({"text": "recipes"}),
        "generationConfig": {"responseMimeType": "application/json", "responseSchema": schema},
    }
    async with httpx.AsyncClient(base_url=mock_url) as http:
        data = (await http.post(f"{MODEL}:generateContent", json=body)).json()
    value = json.loads(data["candidates"][0]["content"]["parts"][0]["text"])
    jsonschema_rs.validate(schema, value)
    assert len(value["recipes"][0]["ingredients"]) == 3


async def test_thoughts_and_images(mock_url: str) -> None:
    image = base64.b64encode(b"fake").decode()
    body = {
        **user({"inline_data": {"mime_type": "image/jpeg", "data": image}}, {"text": "what is this"}),
        "generationConfig": {"thinkingConfig": {"includeThoughts": True}},
    }
    async with httpx.AsyncClient(base_url=mock_url) as http:
        plain = (await http.post(f"{MODEL}:generateContent", json=body)).json()
        streamed = await http.post(f"{MODEL}:streamGenerateContent?alt=sse", json=body)
    parts = plain["candidates"][0]["content"]["parts"]
    assert parts[0]["thought"] is True and parts[0]["text"].startswith("The user asked:")
    assert parts[1]["text"] == "Echo: [image] what is this"
    usage = plain["usageMetadata"]
    assert usage["thoughtsTokenCount"] > 0
    assert usage["promptTokenCount"] == -(-len("what is this") // 4) + 85
    assert {"modality": "IMAGE", "tokenCount": 85} in usage["promptTokensDetails"]
    assert usage["totalTokenCount"] == (
        usage["promptTokenCount"] + usage["candidatesTokenCount"] + usage["thoughtsTokenCount"]
    )
    chunks = sse_payloads(streamed.text)
    assert joined_text(chunks, thought=True) == parts[0]["text"]
    assert joined_text(chunks) == "Echo: [image] what is this"


async def test_cached_tokens_knob(mock_url: str) -> None:
    async with httpx.AsyncClient(base_url=mock_url) as http:
        data = (
            await http.post(
                f"{MODEL}:generateContent", json=user({"text": "z" * 200}), headers={"x-mock-cached-tokens": "20"}
            )
        ).json()
    assert data["usageMetadata"]["cachedContentTokenCount"] == 20


async def test_embed_content_and_batch(mock_url: str) -> None:
    async with httpx.AsyncClient(base_url=mock_url) as http:
        one = await http.post(
            "/v1beta/models/text-embedding-004:embedContent",
            json={"content": {"parts": [{"text": "hello world"}]}, "outputDimensionality": 64},
        )
        batch = await http.post(
            "/v1beta/models/gemini-embedding-001:batchEmbedContents",
            json={
                "requests": [
                    {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "hello world"}]}},
                    {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "other"}]}},
                ]
            },
        )
    values = one.json()["embedding"]["values"]
    assert len(values) == 64
    embeddings = batch.json()["embeddings"]
    assert [len(e["values"]) for e in embeddings] == [3072, 3072]


async def test_malformed_and_unknown_get_gemini_errors(mock_url: str) -> None:
    async with httpx.AsyncClient(base_url=mock_url) as http:
        empty = await http.post(f"{MODEL}:generateContent", json={"contents": []})
        junk = await http.post(f"{MODEL}:generateContent", content=b"{not json")
        bad_part = await http.post(f"{MODEL}:generateContent", json=user({"video": {}}))
        unknown = await http.post(f"{MODEL}:predictEverything", json=user({"text": "x"}))
    for resp in (empty, junk, bad_part):
        assert resp.status_code == 400
        assert resp.json()["error"]["status"] == "INVALID_ARGUMENT"
        assert resp.json()["error"]["code"] == 400
    assert unknown.status_code == 404
    assert unknown.json()["error"]["status"] == "NOT_FOUND"
