"""AI gateway (:3050): OpenAI-compatible /v1 behind virtual keys; routing, cache, quota, hooks, audit."""
