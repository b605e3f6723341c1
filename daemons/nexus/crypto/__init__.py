"""Secrets at rest: the credential vault (AES-256-GCM), virtual-key hashing, and the box's secret files."""
