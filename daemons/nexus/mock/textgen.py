"""What the mock model "says": dialect-neutral prompt summary, answer plan, token counts.

Each dialect module reduces its request body to a ``Prompt`` (counted
characters, images, the last user turn, offered tools, requested output
schema, reasoning flag) and renders an ``Answer`` back into its own wire
format.  ``plan`` decides the answer:

* tools offered, ``tool_choice`` not ``none`` and the last message not a tool
  result → a call of the named (or first) tool with arguments generated from
  its JSON schema;
* a tool result as the last message → ``Tool result: <result>``;
* an output schema (or JSON mode) → JSON valid against the schema;
* otherwise ``Echo: <last user text>`` (images appear as ``[image]``), cut to
  ``max_tokens`` words, or the fixed answer of the ``answer`` knob.

Token counts are plausible, not exact: ``ceil(chars / 4)`` over every piece of
message text plus ``IMAGE_TOKENS`` per image.

Pure and synchronous.  ``MalformedRequest`` is what the dialect parsers raise
for a body the real provider would reject with 400.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import os
from collections.abc import Callable
from typing import Any

import attrs
import orjson

from nexus.mock.knobs import Knobs
from nexus.mock.schemagen import generate

IMAGE_TOKENS = 85


class MalformedRequest(ValueError):
    """The request body is not what the provider accepts; ``str()`` is the 400 message."""


def tokens(chars: int) -> int:
    return (chars + 3) // 4


@attrs.define(slots=True)
class Tool:
    name: str
    schema: Any


@attrs.define(slots=True, kw_only=True)
class Prompt:
    model: str
    chars: int = 0
    images: int = 0
    last_user: str = ""
    tool_result: str | None = None
    tools: list[Tool] = attrs.Factory(list)
    # "auto" | "none" | "required"; a forced tool is named in ``forced_tool``.
    tool_choice: str = "auto"
    forced_tool: str | None = None
    schema: Any = None
    json_mode: bool = False
    reasoning: bool = False
    max_tokens: int | None = None
    stream: bool = False
    include_usage: bool = False

    @property
    def prompt_tokens(self) -> int:
        return tokens(self.chars) + IMAGE_TOKENS * self.images


@attrs.define(slots=True, kw_only=True)
class Answer:
    model: str
    text: str = ""
    thinking: str = ""
    tool: Tool | None = None
    tool_args: Any = None
    tool_args_json: str = ""
    # "stop" | "length" | "tool"; each dialect maps it to its own word.
    finish: str = "stop"
    prompt_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    cached_tokens: int = 0
    chunks: int = 5

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.output_tokens + self.reasoning_tokens

    @property
    def signature(self) -> str:
        """A stable stand-in for Anthropic's opaque thinking signature."""
        return base64.b64encode(hashlib.blake2b(self.thinking.encode(), digest_size=48).digest()).decode()


def is_reasoning_model(model: str) -> bool:
    lowered = model.lower()
    return "reason" in lowered or lowered.startswith(("o1", "o3", "o4"))


def plan(prompt: Prompt, knobs: Knobs) -> Answer:
    answer = Answer(model=knobs.model or prompt.model, chunks=knobs.chunks)
    if prompt.reasoning:
        answer.thinking = f"The user asked: {prompt.last_user[:200]}. I will answer directly."
        answer.reasoning_tokens = tokens(len(answer.thinking))
    tool = _chosen_tool(prompt)
    if tool is not None:
        answer.tool = tool
        answer.tool_args = generate(tool.schema) if tool.schema else {}
        if not isinstance(answer.tool_args, dict):
            answer.tool_args = {"value": answer.tool_args}
        answer.tool_args_json = orjson.dumps(answer.tool_args).decode()
        answer.finish = "tool"
        answer.output_tokens = tokens(len(tool.name) + len(answer.tool_args_json))
    else:
        if prompt.schema is not None:
            answer.text = orjson.dumps(generate(prompt.schema)).decode()
        elif prompt.json_mode:
            answer.text = orjson.dumps({"echo": prompt.last_user}).decode()
        else:
            if knobs.answer:
                text = knobs.answer
            elif prompt.tool_result is not None:
                text = f"Tool result: {prompt.tool_result}"
            else:
                text = f"Echo: {prompt.last_user}"
            limit = prompt.max_tokens
            if limit is not None and text.count(" ") >= limit:
                text = " ".join(text.split(" ")[: max(limit, 1)])
                answer.finish = "length"
            answer.text = text
        answer.output_tokens = max(1, tokens(len(answer.text)))
    answer.prompt_tokens = prompt.prompt_tokens
    answer.cached_tokens = min(knobs.cached_tokens, answer.prompt_tokens)
    return answer


def _chosen_tool(prompt: Prompt) -> Tool | None:
    if not prompt.tools or prompt.tool_choice == "none" or prompt.tool_result is not None:
        return None
    if prompt.forced_tool is not None:
        for tool in prompt.tools:
            if tool.name == prompt.forced_tool:
                return tool
        raise MalformedRequest(f"tool_choice names {prompt.forced_tool!r}, which is not among the tools")
    return prompt.tools[0]


def split(text: str, parts: int) -> list[str]:
    """``text`` cut into ``parts`` nearly equal pieces (fewer when it is shorter), never none."""
    if parts <= 1 or len(text) <= 1:
        return [text]
    parts = min(parts, len(text))
    size, extra = divmod(len(text), parts)
    out = []
    start = 0
    for i in range(parts):
        end = start + size + (1 if i < extra else 0)
        out.append(text[start:end])
        start = end
    return out


_RUN = os.urandom(4).hex()
_COUNTER = itertools.count(1)


def new_id(prefix: str) -> str:
    """A unique id in the provider's style (``chatcmpl-…``, ``msg_…``), cheap to make."""
    return f"{prefix}{_RUN}{next(_COUNTER):010x}"


@attrs.define(slots=True)
class Frames:
    """A streamed answer: ``head`` frames, ``content`` frames (the ones the chunk knobs count), ``tail``.

    Each ``content`` element is one content chunk (a text, thinking or argument delta),
    with any structural frames that open it (an output item, a content block) in front.
    ``error(k)`` is the dialect's error frame sent after the head and ``k`` content
    elements, or as the very first frame when ``k`` is -1.  ``json_array`` marks
    Gemini's non-SSE stream, served as ``application/json``.
    """

    head: list[bytes]
    content: list[bytes]
    tail: list[bytes]
    error: Callable[[int], bytes]
    json_array: bool = False


class Chunks:
    """Builds ``Frames.content``: structural frames wait and ride on the next content chunk."""

    __slots__ = ("frames", "pending")

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.pending = b""

    def opening(self, frame: bytes) -> None:
        self.pending += frame

    def add(self, frame: bytes) -> None:
        self.frames.append(self.pending + frame if self.pending else frame)
        self.pending = b""
