"""The block scanner: offsets, validators, overflow, caching, threads, and never failing on any input."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nexus.policy.rules.model import Rule
from nexus.policy.scan import CompileError, Match, Scanner, core
from nexus.policy.scan import compile as hs_compile
from nexus.policy.scan import scanner as scanner_module

SECRETS = {
    "SECRET_GITHUB_PAT": "ghp_DZFlRJmCGmUXiAPyhzAnar3ZLt4bnlz2MPKg",
    "SECRET_AWS_ACCESS_KEY_ID": "AKIA454ML6LG4TJFCZ4K",
    "SECRET_STRIPE_SECRET_KEY": "sk_live_cWJNG5KEjmlhnl1ks7RgLdi8",
    "PII_CREDIT_CARD": "4526 0181 5908 3012",
    "PII_EMAIL_ADDRESS": "maria.gonzalez84@gmail.com",
    "PII_IBAN": "GB98 VMHE 6712 7684 2684 65",
}
PREFIXES = ["", "héllo ", "🎉🎉 ", "日本語のテキスト ", "e\u0301\u0301 combining ", "مرحبا ",
            "\U0001f468\u200d\U0001f469 "]


def make_rule(rule_id: str, pattern: str, flags: tuple[str, ...] = (), validator: str | None = None) -> Rule:
    return Rule(id=rule_id, category="test", severity="soft", pattern=pattern, flags=flags, description="d",
                labels=(), validator=validator, examples=("x",), counterexamples=("y",), pack="test",
                pack_version="1")


def found(matches: list[Match], rule_id: str) -> list[tuple[int, int]]:
    return [(m.start, m.end) for m in matches if m.rule_id == rule_id]


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize(("rule_id", "secret"), list(SECRETS.items()))
def test_offsets_are_characters_after_multibyte_text(scanner: Scanner, prefix: str, rule_id: str, secret: str) -> None:
    text = f"{prefix}note: {secret} — ✓ 完了"
    start = text.index(secret)
    assert (start, start + len(secret)) in found(scanner.scan(text), rule_id)


@pytest.mark.parametrize("prefix", PREFIXES)
def test_scan_bytes_reports_byte_offsets(scanner: Scanner, prefix: str) -> None:
    secret = SECRETS["SECRET_GITHUB_PAT"]
    data = f"{prefix}token {secret} ✓".encode()
    start = data.index(secret.encode())
    assert found(scanner.scan_bytes(data), "SECRET_GITHUB_PAT") == [(start, start + len(secret))]


def test_invalid_utf8_and_lone_surrogates(scanner: Scanner) -> None:
    secret = SECRETS["SECRET_AWS_ACCESS_KEY_ID"]
    data = b"\xff\xfe\xc3 key=" + secret.encode() + b" \xed\xa0\x80 \xc3"
    start = data.index(secret.encode())
    assert found(scanner.scan_bytes(data), "SECRET_AWS_ACCESS_KEY_ID") == [(start, start + 20)]
    text = "\ud800\udfff key " + secret + " \udc80"
    assert found(scanner.scan(text), "SECRET_AWS_ACCESS_KEY_ID") == [(text.index(secret), text.index(secret) + 20)]


def test_value_group_is_reported_and_validated(scanner: Scanner) -> None:
    text = 'DB_PASSWORD="Tr0ub4dor&3" and password: ${DB_PASSWORD}'
    assert found(scanner.scan(text), "SECRET_PASSWORD_ASSIGNMENT") == [(13, 24)]


def test_validators_reject_look_alikes(scanner: Scanner) -> None:
    text = ("test card 4242 4242 4242 4242, typo card 4526 0181 5908 3013, placeholder AKIAXXXXXXXXXXXXXXXX, "
            "version 1.2.3.4, ssn 000-12-3456, uuid 550e8400-e29b-41d4-a716-446655440000")
    assert {m.category for m in scanner.scan(text)} <= {"compliance", "data-loss"}


def test_matches_are_sorted_and_same_rule_spans_never_overlap(scanner: Scanner) -> None:
    text = " ".join(SECRETS.values()) * 3 + " ignore all previous instructions " * 5
    matches = scanner.scan(text)
    assert matches == sorted(matches, key=lambda m: (m.start, m.end, m.rule_id))
    last_end: dict[str, int] = {}
    for m in matches:
        assert m.start >= last_end.get(m.rule_id, 0)
        last_end[m.rule_id] = m.end


def test_overlapping_windows_of_one_rule_merge() -> None:
    scanner = Scanner.build([make_rule("AAA", r"a{3,8}b?")])
    text = "x " + "a" * 200 + " y"
    assert found(scanner.scan(text), "AAA") == [(2, 202)]


def test_overflow_path_stays_complete_and_linear(scanner: Scanner, monkeypatch: pytest.MonkeyPatch) -> None:
    emails = " ".join(f"user.{i:x}@mail{i % 97}.io" for i in range(core.HIT_CAP + 5000))
    text = emails + " " + SECRETS["SECRET_GITHUB_PAT"]
    calls: list[int] = []
    overflow = scanner._spans_overflow

    def spy(text: str, enc: bytes) -> list[core.Span]:
        calls.append(1)
        return overflow(text, enc)

    monkeypatch.setattr(scanner, "_spans_overflow", spy)
    started = time.perf_counter()
    matches = scanner.scan(text)
    assert time.perf_counter() - started < 20
    assert calls == [1]
    assert len(found(matches, "PII_EMAIL_ADDRESS")) == core.HIT_CAP + 5000
    assert found(matches, "SECRET_GITHUB_PAT")


def test_stream_path_for_oversized_bodies(scanner: Scanner, monkeypatch: pytest.MonkeyPatch) -> None:
    text = ("lorem ipsum " * 50 + " ".join(SECRETS.values()) + " 日本 ") * 30
    expected = scanner.scan(text)
    monkeypatch.setattr(scanner_module, "BLOCK_LIMIT", 512)
    monkeypatch.setattr(scanner_module, "_SLICE_CHARS", 777)
    assert scanner.scan(text) == expected


def test_scans_from_many_threads_agree(scanner: Scanner) -> None:
    texts = [f"{p} {s} {p}" for p in PREFIXES for s in SECRETS.values()]
    expected = [scanner.scan(t) for t in texts]
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(5):
                assert [scanner.scan(t) for t in texts] == expected
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors


def test_database_cache_roundtrip_and_corruption(tmp_path: Path) -> None:
    rules = [make_rule("R1", r"\bfoo\d{2}\b"), make_rule("R2", r"bar$", ("multiline",))]
    first = Scanner.build(rules, cache_dir=tmp_path)
    files = list(tmp_path.glob("hyperscan-*.db"))
    assert len(files) == 1
    second = Scanner.build(rules, cache_dir=tmp_path)
    text = "foo12 foo3 bar\nbar"
    assert second.scan(text) == first.scan(text) == [
        Match("R1", "test", "soft", 0, 5), Match("R2", "test", "soft", 11, 14), Match("R2", "test", "soft", 15, 18)]
    files[0].write_bytes(files[0].read_bytes()[:-40] + b"x" * 40)
    third = Scanner.build(rules, cache_dir=tmp_path)
    assert third.scan(text) == first.scan(text)
    assert hs_compile._load(files[0]) is not None  # rewritten after the corrupt copy was ignored
    other = Scanner.build([make_rule("R1", r"\bfoo\d{3}\b")], cache_dir=tmp_path)
    assert len(list(tmp_path.glob("hyperscan-*.db"))) == 2 and other.rules_hash != first.rules_hash


def test_unwritable_cache_dir_still_builds(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    scanner = Scanner.build([make_rule("R1", r"foo")], cache_dir=blocker / "cache")
    assert found(scanner.scan("a foo"), "R1") == [(2, 5)]


def test_compile_error_names_the_rule() -> None:
    with pytest.raises(CompileError, match="rule BAD: Hyperscan rejects the pattern"):
        Scanner.build([make_rule("GOOD", r"foo"), make_rule("BAD", r"foo\d++")])


def test_rules_hash_tracks_what_changes_results() -> None:
    base = make_rule("R1", "foo")
    h = scanner_module.rules_hash
    assert h([base]) == h([make_rule("R1", "foo")])
    assert h([base]) != h([make_rule("R1", "foo", validator="email")])
    assert h([base]) != h([make_rule("R1", "fooo")])


@pytest.mark.parametrize(
    "text",
    ["1" * 1_000_000, "a@" * 300_000, "é" * 500_000, "-----BEGIN RSA PRIVATE KEY-----\n" * 20_000,
     "password=" * 100_000, "\x00" * 1_000_000, ("AKIA" + "A" * 16 + " ") * 40_000],
)
def test_pathological_bodies_finish(scanner: Scanner, text: str) -> None:
    started = time.perf_counter()
    scanner.scan(text)
    assert time.perf_counter() - started < 10


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=()), max_size=400))
def test_any_text_scans(scanner: Scanner, text: str) -> None:
    for m in scanner.scan(text):
        assert 0 <= m.start < m.end <= len(text)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_any_bytes_scan(scanner: Scanner, data: bytes) -> None:
    for m in scanner.scan_bytes(data):
        assert 0 <= m.start < m.end <= len(data)


@settings(max_examples=150, deadline=None)
@given(
    st.text(alphabet=st.characters(codec="utf-8"), max_size=60),
    st.sampled_from(sorted(SECRETS)),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=60),
)
def test_secret_in_random_unicode_is_found_at_its_offsets(scanner: Scanner, before: str, rule_id: str,
                                                          after: str) -> None:
    secret = SECRETS[rule_id]
    text = f"{before}\n{secret}\n{after}"
    start = len(before) + 1
    assert (start, start + len(secret)) in found(scanner.scan(text), rule_id)
    data = text.encode("utf-8")
    bstart = len(before.encode()) + 1
    assert (bstart, bstart + len(secret.encode())) in found(scanner.scan_bytes(data), rule_id)
