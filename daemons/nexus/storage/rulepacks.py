"""Seed the packaged rule packs into PostgreSQL (``rule_pack``, ``rule``), where the control plane lists them and
per-org overrides (``rule_override``) refer to them by rule id.

Idempotent and version-aware: a pack whose content hash is unchanged is skipped; a changed pack's rules are
upserted and rules that left the pack are deleted.  Sync psycopg: it runs from ``nexus db migrate``.
"""

from __future__ import annotations

import hashlib

import orjson
import psycopg

from nexus.policy.rules.loader import load_packs
from nexus.policy.rules.model import RulePack


def _digest(pack: RulePack) -> bytes:
    rules = [[r.id, r.category, r.severity, r.pattern, list(r.flags), r.description, list(r.labels), r.validator,
              list(r.examples), list(r.counterexamples)] for r in pack.rules]
    return hashlib.sha256(orjson.dumps([pack.name, pack.version, pack.description, rules])).digest()


def seed_rule_packs(conn: psycopg.Connection[object]) -> list[str]:
    """Upsert every packaged pack; returns the names of the packs that changed."""
    changed: list[str] = []
    for pack in load_packs():
        digest = _digest(pack)
        with conn.transaction():
            row = conn.execute("SELECT id, content_sha256 FROM rule_pack WHERE name = %s", (pack.name,)).fetchone()
            if row is not None and row[1] is not None and bytes(row[1]) == digest:  # type: ignore[index]
                continue
            pack_id = conn.execute(
                "INSERT INTO rule_pack (name, version, description, source, content_sha256) "
                "VALUES (%s, %s, %s, 'builtin', %s) ON CONFLICT (name) DO UPDATE SET version = EXCLUDED.version, "
                "description = EXCLUDED.description, content_sha256 = EXCLUDED.content_sha256 RETURNING id",
                (pack.name, pack.version, pack.description, digest)).fetchone()[0]  # type: ignore[index]
            for r in pack.rules:
                conn.execute(
                    "INSERT INTO rule (rule_pack_id, rule_id, category, severity, pattern, flags, description, "
                    "labels, validator, examples, counterexamples) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                    "ON CONFLICT (rule_id) DO UPDATE SET rule_pack_id = EXCLUDED.rule_pack_id, "
                    "category = EXCLUDED.category, severity = EXCLUDED.severity, pattern = EXCLUDED.pattern, "
                    "flags = EXCLUDED.flags, description = EXCLUDED.description, labels = EXCLUDED.labels, "
                    "validator = EXCLUDED.validator, examples = EXCLUDED.examples, "
                    "counterexamples = EXCLUDED.counterexamples",
                    (pack_id, r.id, r.category, r.severity, r.pattern, list(r.flags), r.description, list(r.labels),
                     r.validator, list(r.examples), list(r.counterexamples)))
            conn.execute("DELETE FROM rule WHERE rule_pack_id = %s AND NOT (rule_id = ANY(%s))",
                         (pack_id, [r.id for r in pack.rules]))
        changed.append(pack.name)
    return changed
