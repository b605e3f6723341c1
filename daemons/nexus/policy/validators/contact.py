"""Contact details: e-mail addresses and telephone numbers."""

from __future__ import annotations

from nexus.policy.validators._common import has_run, is_ascii_digits, is_sequence

# Addresses that name a role or a machine, not a person.
_ROLE_LOCALS = frozenset({
    "noreply", "no-reply", "no_reply", "donotreply", "do-not-reply", "do_not_reply", "postmaster", "mailer-daemon",
    "hostmaster", "webmaster", "abuse", "root", "daemon", "nobody", "bounce", "bounces", "notifications",
    "notification", "alerts", "support", "info", "sales", "help", "helpdesk", "contact", "hello", "team", "billing",
    "security", "privacy", "legal", "press", "careers", "jobs", "admin", "office", "marketing", "feedback",
    "newsletter", "example", "user", "username", "email", "name", "someone", "somebody", "you", "yourname",
    "ci", "bot", "build", "builds", "deploy", "jenkins", "github-actions", "actions", "automation", "system",
    "ubuntu", "ec2-user", "centos", "debian", "fedora", "pi", "opc", "azureuser", "core", "vagrant",
    "your.name", "your_name", "your-name", "youremail", "your.email", "your_email", "firstname.lastname",
    "first.last", "firstname", "test", "foo", "bar", "me", "git", "dev", "devnull",
})
_PLACEHOLDER_DOMAINS = frozenset({"domain.com", "yourdomain.com", "yourcompany.com", "email.com", "mail.example",
                                  "company.com", "host.com", "server.com", "somewhere.com"})
# Host names that follow user@ in SSH targets and commit metadata, never mailboxes.
_MACHINE_DOMAINS = ("noreply.github.com", "amazonaws.com", "compute.internal", "cloudapp.net", "cloudapp.azure.com")
_RESERVED_TLDS = frozenset({"test", "invalid", "localhost", "local", "example", "internal", "lan", "png", "jpg",
                            "jpeg", "gif", "svg", "webp", "js", "ts", "py", "css"})


def email(text: str) -> bool:
    """A deliverable-looking personal address: not a role, placeholder, reserved domain or asset name.

    ``name@2x.png`` (retina assets) and ``pkg@1.2.3`` (version pins) are not
    addresses; ``example.com`` with a personal-looking local part still is, since
    pasted records use it as a stand-in for a real domain.
    """
    local, _, domain = text.rpartition("@")
    local, domain = local.lower(), domain.lower().rstrip(".")
    if not local or "." not in domain or local in _ROLE_LOCALS or domain in _PLACEHOLDER_DOMAINS:
        return False
    if local.startswith(("noreply", "no-reply", "mailer")) or domain.endswith(_MACHINE_DOMAINS):
        return False
    tld = domain.rsplit(".", 1)[1]
    if tld in _RESERVED_TLDS or not tld.isalpha():
        return False
    return not domain.split(".")[0].isdigit() and not has_run(local, 5)


def _phone_digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit() and ch.isascii())


def phone_e164(text: str) -> bool:
    """``+<country><number>``: 8-15 digits, a plausible country code, not a run or a walk."""
    digits = _phone_digits(text)
    if not 8 <= len(digits) <= 15 or digits[0] == "0":
        return False
    if text.count("(") != text.count(")") or (digits[0] == "1" and digits[1:4] in _TOLL_FREE):
        return False
    return not has_run(digits, 7) and not is_sequence(digits) and len(set(digits)) >= 3


_TOLL_FREE = frozenset({"800", "833", "844", "855", "866", "877", "888"})


def nanp_phone(text: str) -> bool:
    """North American number: area code and exchange start 2-9, not N11 service codes."""
    digits = _phone_digits(text)
    if len(digits) == 11 and digits[0] == "1":
        digits = digits[1:]
    if len(digits) != 10 or not is_ascii_digits(digits):
        return False
    area, exchange = digits[:3], digits[3:6]
    if area[0] in "01" or exchange[0] in "01" or area[1:] == "11" or exchange[1:] == "11":
        return False
    if area in _TOLL_FREE:
        return False  # a business line, not a person's number
    if text.count("(") != text.count(")"):
        return False
    return not has_run(digits, 7) and not is_sequence(digits)


def phone_national(text: str) -> bool:
    """A number written next to a 'phone'/'tel' label: 7-15 digits, not a date or a walk."""
    digits = _phone_digits(text)
    if not 7 <= len(digits) <= 15 or text.count("(") != text.count(")"):
        return False
    return not has_run(digits, 6) and not is_sequence(digits) and len(set(digits)) >= 3


_NOT_NAMES = frozenset({
    "enter", "your", "name", "first", "last", "full", "required", "optional", "string", "text", "none", "null",
    "unknown", "test", "example", "sample", "placeholder", "redacted", "anonymous", "customer", "user", "the",
    "not", "see", "same", "tbd", "pending", "is", "and",
})


def person_name(text: str) -> bool:
    """A capitalised name after a name label, not a form prompt ('Enter your name') or a type."""
    words = text.replace("-", " ").replace("'", " ").split()
    if not words or any(w.lower() in _NOT_NAMES for w in words):
        return False
    return all(w[:1].isupper() for w in words) and not all(w.isupper() and len(w) > 1 for w in words)
