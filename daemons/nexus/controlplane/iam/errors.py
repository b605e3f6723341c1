"""The errors of the IAM package: each carries a message fit to show the caller as is."""

from __future__ import annotations

__all__ = ["IamError", "NrnError", "PolicyError", "RequestError", "StoredPolicyError"]


class IamError(ValueError):
    """Base of every IAM error (a ``ValueError``: it is always about bad input)."""


class NrnError(IamError):
    """A resource name (NRN) is malformed; the message quotes it and says what is wrong."""


class PolicyError(IamError):
    """A policy document is invalid.

    ``path`` is the JSON path of the offending value (``Statement[1].Effect``) and ``problem``
    what is wrong with it; ``str()`` is ``"<path>: <problem>"``.
    """

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


class RequestError(IamError):
    """An access request is malformed (an action that is not ``admin:<resource>.<verb>``, a bad context key)."""


class StoredPolicyError(IamError):
    """A policy read from the database does not parse; the message names the policy.

    The API validates documents on write, so this means a row was edited by hand or written by a
    newer build. Callers must fail the request rather than evaluate without the policy: dropping it
    could drop a Deny.
    """
