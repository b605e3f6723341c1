"""``keyword-filter``: the operator's own words and patterns, blocking as soft by default.  Pure.

Options (camelCase in the hook config):

``keywords``
    literal strings; matched as whole words (``wholeWords``, default true:
    a ``\\b`` edge on each side that starts or ends with an ASCII word
    character; Hyperscan has no Unicode ``\\b``, so an edge with another
    character is not bounded) and caseless (Unicode letters too) unless
    ``caseSensitive``;
``patterns``
    ``[{"pattern": "...", "id": "MY_ID"}]``: regular expressions in the rule
    dialect (Hyperscan and ``re`` alike: no lookaround, no backreferences,
    bounded width);
``severity`` (default ``soft``), ``category`` (default ``keyword``, a tag for
data residency), ``onMatch`` and ``holdBackChars`` as for every content hook.

Each keyword becomes a rule of the snapshot's union scanner.  Its id, which the
redaction placeholder shows, is the pattern's ``id`` or ``KW_<hash of the hook
id>_<n>``, so two keyword hooks never claim each other's matches.
"""

from __future__ import annotations

import hashlib
import re

import attrs

from nexus.policy.config import HookConfig, OnMatch, PolicyConfigError, SeverityName, structure_options
from nexus.policy.hooks.base import BuildEnv
from nexus.policy.hooks.scanning import MAX_HOLD_BACK, ScanHook
from nexus.policy.rules import regex
from nexus.policy.rules.model import Rule

DEFAULT_ON_MATCH = OnMatch()
_ID = re.compile(r"[A-Z][A-Z0-9_]{2,79}")


@attrs.frozen(kw_only=True)
class KeywordPattern:
    pattern: str
    id: str | None = None


@attrs.frozen(kw_only=True)
class KeywordOptions:
    keywords: tuple[str, ...] = ()
    patterns: tuple[KeywordPattern, ...] = ()
    case_sensitive: bool = False
    whole_words: bool = True
    severity: SeverityName = "soft"
    category: str = "keyword"
    on_match: OnMatch | None = None
    hold_back_chars: int = attrs.field(
        default=MAX_HOLD_BACK, validator=[attrs.validators.ge(0), attrs.validators.le(MAX_HOLD_BACK)]
    )


def _word(ch: str) -> bool:
    return ch.isascii() and (ch.isalnum() or ch == "_")


def _literal(keyword: str, whole_words: bool, caseless: bool) -> str:
    if caseless:
        # The caseless flag folds ASCII only (Unicode folding needs ucp, which forbids \b in
        # Hyperscan): spell out the case variants of other letters.
        parts = []
        for ch in keyword:
            variants = dict.fromkeys(v for v in (ch, ch.lower(), ch.upper()) if len(v) == 1)
            if ch.isascii() or len(variants) == 1:
                parts.append(re.escape(ch))
            else:
                parts.append("[" + "".join(re.escape(v) for v in variants) + "]")
        body = "".join(parts)
    else:
        body = re.escape(keyword)
    if whole_words:
        if _word(keyword[0]):
            body = r"\b" + body
        if _word(keyword[-1]):
            body += r"\b"
    return body


def build(config: HookConfig, env: BuildEnv) -> ScanHook:
    options = structure_options(KeywordOptions, config)
    if not options.keywords and not options.patterns:
        raise PolicyConfigError(f"{config.label}: needs keywords or patterns")
    base = ("utf8",) if options.case_sensitive else ("caseless", "utf8")
    prefix = "KW_" + hashlib.sha256(config.id.encode()).hexdigest()[:8].upper()
    sources: list[tuple[str | None, str, tuple[str, ...], str]] = []
    for keyword in options.keywords:
        if not keyword.strip():
            raise PolicyConfigError(f"{config.label}: empty keyword")
        pattern = _literal(keyword, options.whole_words, not options.case_sensitive)
        sources.append((None, pattern, base, f"keyword {keyword!r}"))
    for item in options.patterns:
        sources.append((item.id, item.pattern, base, f"pattern {item.pattern!r}"))
    rules: list[Rule] = []
    for n, (rule_id, pattern, flags, description) in enumerate(sources, 1):
        rid = rule_id or f"{prefix}_{n}"
        if not _ID.fullmatch(rid):
            raise PolicyConfigError(f"{config.label}: id {rid!r} must be UPPER_SNAKE_CASE (3-80 characters)")
        try:
            regex.check(pattern, flags)
        except regex.PatternError as exc:
            raise PolicyConfigError(f"{config.label}: {description}: {exc}") from None
        rules.append(
            Rule(
                id=rid,
                category=options.category,
                severity=options.severity,
                pattern=pattern,
                flags=tuple(sorted(flags)),
                description=description,
                labels=(),
                validator=None,
                examples=(),
                counterexamples=(),
                pack=f"hook:{config.id}",
                pack_version="",
            )
        )
    if len({r.id for r in rules}) != len(rules):
        raise PolicyConfigError(f"{config.label}: duplicate ids")
    return ScanHook(config, tuple(rules), options.on_match or DEFAULT_ON_MATCH, options.hold_back_chars)
