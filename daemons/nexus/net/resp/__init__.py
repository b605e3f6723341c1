"""Valkey/Redis RESP client on Trio streams with hiredis as the parser."""
