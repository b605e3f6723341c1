"""Trio-native network protocol layers for the hot path: HTTP/1.1, RESP (Valkey) and NATS.

Each is a pure codec plus a thin Trio shell.
"""
