"""The compliance engine: rule packs, validators and the Hyperscan scanner.  Pure and synchronous.

Nothing under ``nexus.policy`` imports Trio or touches sockets: the gateway, the
proxy and the agent call it from their own shells (a scan of 64 KB or more is
worth ``trio.to_thread``; the scanner is thread-safe, with one Hyperscan scratch
per thread).

Subpackages and what other code calls:

``rules``
    ``Rule``, ``RulePack`` (attrs records), ``load_packs(directory=None)``,
    ``load_pack_file(path)``, ``all_rules(packs)``, ``RulePackError``.
``validators``
    ``get(name) -> Callable[[str], bool]`` and ``NAMES``: checksum and
    structure checks (Luhn, IBAN mod-97, SSN, national ids, entropy, …) run on
    the text of each candidate match.
``scan``
    ``Scanner.build(rules, cache_dir=None)`` → ``scan(text)``,
    ``scan_bytes(data)``, ``stream()`` → ``StreamScan.feed(text)`` /
    ``close()``; ``Match(rule_id, category, severity, start, end)``.

Importing ``nexus.policy`` itself loads nothing heavy: Hyperscan is imported by
``nexus.policy.scan`` only.
"""
