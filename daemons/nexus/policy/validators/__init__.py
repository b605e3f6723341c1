"""Checksum and structure checks run on the text of a candidate match.  Pure.

Each validator is ``Callable[[str], bool]``: it gets the reported value (the
``v`` group when the rule has one, else the whole match), strips the separators
its format allows, and answers whether the value is plausibly real.  They never
raise on any input; ``registry`` maps the names used in rule packs to them.
"""

from nexus.policy.validators.registry import NAMES, Validator, get

__all__ = ["NAMES", "Validator", "get"]
