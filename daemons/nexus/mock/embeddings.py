"""Deterministic text embeddings that behave like real ones for tests.

A text becomes a bag of features: each lowercased word and each character
trigram of ``^word$``, all of weight 1.  Every feature is hashed (CRC-32,
stable across processes, unlike ``hash()``) to one dimension and a sign, the
weights are summed there and the vector is L2-normalised.  So the same text
always gives the same vector, near-duplicate sentences share most features
(cosine well above 0.9), and unrelated sentences share few (cosine near 0).

Pure and synchronous; raises nothing.
"""

from __future__ import annotations

import base64
import math
import struct
import zlib

# Punctuation becomes a space so "dog." and "dog" are the same word.
_SEPARATORS = str.maketrans({c: " " for c in "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~\t\r\n"})


def embed(text: str, dimensions: int) -> list[float]:
    """The unit vector of ``text`` in ``dimensions`` dimensions (≥ 1)."""
    vector = [0.0] * dimensions
    for word in text.lower().translate(_SEPARATORS).split():
        _add(vector, "w:" + word, dimensions)
        marked = f"^{word}$"
        for i in range(len(marked) - 2):
            _add(vector, marked[i : i + 3], dimensions)
    norm = math.sqrt(sum(x * x for x in vector))
    if norm == 0.0:
        # Empty text still gets a unit vector, as real providers return one.
        vector[0] = 1.0
        return vector
    return [x / norm for x in vector]


def _add(vector: list[float], feature: str, dimensions: int) -> None:
    quotient, slot = divmod(zlib.crc32(feature.encode()), dimensions)
    vector[slot] += 1.0 if quotient & 1 else -1.0


def to_base64(vector: list[float]) -> str:
    """Little-endian float32, base64: OpenAI's ``encoding_format=base64``."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
