"""Compliance proxy (:3128): CONNECT, TLS bump of AI hosts, the same hooks, attestation passthrough."""
