"""Virtual keys on the hot path: where a request carries its key, and the cached lookup behind it."""
