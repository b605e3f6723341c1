"""Deterministic embeddings: stable, unit length, similar texts close, unrelated texts far."""

from __future__ import annotations

import base64
import math
import struct

import httpx
import openai
import pytest

from nexus.mock.embeddings import embed, to_base64
from tests.mock.conftest import in_thread


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


NEAR = [
    ("The quick brown fox jumps over the lazy dog", "The quick brown fox jumped over the lazy dog."),
    ("Please reset my account password", "please reset my account password!"),
    ("Invoice 2024-117 is overdue by thirty days", "Invoice 2024-117 is overdue by thirty days now"),
]
FAR = [
    ("Quarterly revenue grew by twelve percent", "The cat sleeps on the warm windowsill"),
    ("The weather in Paris is sunny today", "Stock markets fell sharply on Monday"),
    ("How do I bake sourdough bread?", "Kubernetes pod eviction thresholds"),
]


@pytest.mark.parametrize("dimensions", [256, 768, 1536])
def test_near_duplicates_are_close_and_unrelated_texts_far(dimensions: int) -> None:
    for a, b in NEAR:
        assert cosine(embed(a, dimensions), embed(b, dimensions)) > 0.9, (a, b)
    for a, b in FAR:
        assert cosine(embed(a, dimensions), embed(b, dimensions)) < 0.5, (a, b)


def test_identical_text_identical_unit_vector() -> None:
    a = embed("same words here", 512)
    assert a == embed("same words here", 512)
    assert math.isclose(math.sqrt(sum(x * x for x in a)), 1.0)
    empty = embed("", 4)
    assert empty == [1.0, 0.0, 0.0, 0.0]


def test_base64_is_little_endian_float32() -> None:
    vector = embed("pack me", 16)
    unpacked = struct.unpack("<16f", base64.b64decode(to_base64(vector)))
    assert all(math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-7) for x, y in zip(unpacked, vector, strict=True))


async def test_same_vectors_through_both_dialects(mock_url: str) -> None:
    text = NEAR[0][0]
    with openai.OpenAI(base_url=f"{mock_url}/v1", api_key="k", max_retries=0) as c:
        result = await in_thread(
            lambda: c.embeddings.create(
                model="text-embedding-3-small", input=[text, NEAR[0][1], FAR[0][0]], dimensions=300
            )
        )
    vectors = [d.embedding for d in result.data]
    assert cosine(vectors[0], vectors[1]) > 0.9
    assert cosine(vectors[0], vectors[2]) < 0.5
    async with httpx.AsyncClient(base_url=mock_url) as http:
        resp = await http.post(
            "/v1beta/models/text-embedding-004:embedContent",
            json={"content": {"parts": [{"text": text}]}, "outputDimensionality": 300},
        )
    gemini = resp.json()["embedding"]["values"]
    assert cosine(gemini, vectors[0]) > 0.9999
