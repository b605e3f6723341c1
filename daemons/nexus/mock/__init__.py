"""The mock LLM upstream (``nexus mock-provider``): OpenAI, Anthropic and Gemini on one port.

``app.make_handler`` is the entry point; ``knobs`` documents the fault and
latency knobs; ``openai``, ``anthropic`` and ``gemini`` are the pure wire
renderers; ``textgen`` decides what the mock model says; ``schemagen`` makes
JSON valid against a schema; ``embeddings`` makes deterministic vectors.
"""
