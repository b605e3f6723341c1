"""Upstream providers: where each adapter family lives on the wire (URL, auth headers)."""
