"""Nexus resource names (NRNs) and the Resource patterns of policies that match them. Pure.

An NRN is ``nrn:nexus:<service>:<scope>:<type>/<id>``:

- ``service`` is one of ``SERVICES``;
- ``scope`` is ``org/<org path>`` (``org/acme/emea``) for what belongs to an organization, or
  empty for system-wide things (the provider catalogue, rule packs, managed groups and policies):
  ``nrn:nexus:gateway::provider/<id>``. ``*`` as a scope names every scope at once (a collection
  that spans tenants);
- ``type`` is the resource kind, the ``<resource>`` of an ``admin:<resource>.<verb>`` action;
- ``id`` is anything non-empty without white space, ``:`` and ``/`` included (model codes).
  A request on a collection (list, create) names ``<type>/*``; the ``*`` there is just a
  character of the concrete name.

A Resource *pattern* has the same shape, with globs:

- ``*`` alone, or ``nrn:nexus:*``, matches everything; a pattern may stop early with a ``*``
  segment (``nrn:nexus:gateway:*``) that matches all that follows;
- ``*`` in the service or type matches within that segment, and in the id matches anything;
- the scope ``*`` matches every scope, the empty scope only the empty one, and ``org/<path>``
  covers that org *and its descendants*: ``org/acme`` matches ``org/acme`` and ``org/acme/emea``,
  never ``org/acmex`` (inheritance stops at slash boundaries). ``*`` in an org path matches within
  one path component: ``org/*/emea`` is every top-level org's ``emea`` subtree;
- policy variables (``${nexus:PrincipalOrgPath}``, see ``variables``) may stand in the org path
  and the id and are substituted literally (a ``*`` in a value is not a glob).

Matching is case-sensitive. Patterns compile once to a regular expression; one with variables
compiles per distinct set of values, behind an LRU cache.
"""

from __future__ import annotations

import functools
import re

import attrs

from nexus.controlplane.iam.errors import NrnError
from nexus.controlplane.iam.variables import Part, Var, resolve, split_template
from nexus.controlplane.principal import Principal

__all__ = [
    "SERVICES",
    "Nrn",
    "ResourcePattern",
    "compile_resource_pattern",
    "format_nrn",
    "in_org_subtree",
    "parse_nrn",
    "scope_org_path",
]

SERVICES = ("gateway", "compliance", "agent", "platform", "iam")
_SERVICE_SET = frozenset(SERVICES)
_PREFIX = "nrn:nexus:"
_SHAPE = "nrn:nexus:<service>:<scope>:<type>/<id>"
_MAX_LEN = 1024

_SLUG = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_TYPE = re.compile(r"[a-z][a-z0-9-]*")
_ID = re.compile(r"[^\s\x00-\x1f\x7f]+")

# Private-use code points stand in for variables while a pattern is split into segments.
_VAR_BASE = 0xE000
_VAR_LIMIT = 0xF8FF
_PRIVATE = re.compile("[\ue000-\uf8ff]")
_SERVICE_GLOB = re.compile(r"[a-z*]+")
_PATH_GLOB = re.compile(r"[a-z0-9*\ue000-\uf8ff-]+")
_TYPE_GLOB = re.compile(r"[a-z0-9*-]+")
_ID_GLOB = re.compile(r"[^\s\x00-\x1f\x7f]+")


@attrs.frozen
class Nrn:
    """A parsed concrete resource name. ``org_path`` is None unless the scope is ``org/<path>``."""

    service: str
    scope: str
    type: str
    id: str

    @property
    def org_path(self) -> str | None:
        return self.scope[4:] if self.scope.startswith("org/") else None

    def __str__(self) -> str:
        return f"{_PREFIX}{self.service}:{self.scope}:{self.type}/{self.id}"


def format_nrn(service: str, org_path: str | None, rtype: str, rid: str) -> str:
    """The NRN of a resource. ``org_path`` None means system-wide (empty scope), ``"*"`` every scope.

    Raises ``NrnError`` when a part is malformed, so a name we mint always parses.
    """
    scope = "" if org_path is None else "*" if org_path == "*" else f"org/{org_path}"
    text = f"{_PREFIX}{service}:{scope}:{rtype}/{rid}"
    parse_nrn(text)
    return text


def parse_nrn(text: str) -> Nrn:
    """Parse a concrete NRN; ``NrnError`` says what is wrong with a malformed one."""
    if not isinstance(text, str):
        raise NrnError(f"a resource name must be a string, not {type(text).__name__}")
    if len(text) > _MAX_LEN:
        raise NrnError(f"resource name longer than {_MAX_LEN} characters")
    if not text.startswith(_PREFIX):
        raise NrnError(f"not a resource name: {text!r} (expected {_SHAPE})")
    parts = text[len(_PREFIX) :].split(":", 2)
    if len(parts) != 3:
        raise NrnError(f"not a resource name: {text!r} (expected {_SHAPE})")
    service, scope, rest = parts
    if service not in _SERVICE_SET:
        raise NrnError(f"{text!r}: unknown service {service!r} (one of {', '.join(SERVICES)})")
    if scope not in ("", "*"):
        if not scope.startswith("org/"):
            raise NrnError(f"{text!r}: scope must be org/<org path>, * or empty, not {scope!r}")
        for slug in scope[4:].split("/"):
            if not _SLUG.fullmatch(slug):
                raise NrnError(f"{text!r}: {slug!r} is not an org slug in scope {scope!r}")
    rtype, slash, rid = rest.partition("/")
    if not slash:
        raise NrnError(f"{text!r}: expected <type>/<id> after the scope, got {rest!r}")
    if not _TYPE.fullmatch(rtype):
        raise NrnError(f"{text!r}: {rtype!r} is not a resource type (lower case letters, digits, '-')")
    if not _ID.fullmatch(rid):
        raise NrnError(f"{text!r}: the id must be non-empty without white space or control characters")
    return Nrn(service, scope, rtype, rid)


def scope_org_path(resource: str) -> str | None:
    """The org path of an NRN's scope (``acme/emea``), or None when it is not ``org/...``. No validation."""
    parts = resource.split(":", 4)
    if len(parts) < 4 or not parts[3].startswith("org/"):
        return None
    return parts[3][4:]


def in_org_subtree(resource: str, org_path: str) -> bool:
    """Whether ``resource`` lies in ``org_path`` or one of its descendants."""
    path = scope_org_path(resource)
    return path is not None and (path == org_path or path.startswith(org_path + "/"))


@functools.lru_cache(maxsize=4096)
def _regex(source: str) -> re.Pattern[str]:
    return re.compile(source, re.DOTALL)


@attrs.frozen
class ResourcePattern:
    """A compiled Resource pattern; ``matches`` tests a concrete NRN for a principal.

    ``_static`` is the compiled pattern when it has no variables; otherwise ``_template`` holds
    regular-expression source with ``Var`` parts to substitute.
    """

    text: str
    _static: re.Pattern[str] | None = attrs.field(repr=False, eq=False)
    _template: tuple[Part, ...] = attrs.field(repr=False, eq=False)

    def matches(self, resource: str, principal: Principal) -> bool:
        if self._static is not None:
            return self._static.fullmatch(resource) is not None
        source: list[str] = []
        for part in self._template:
            if isinstance(part, Var):
                value = resolve(part.name, principal)
                if value is None:
                    return False
                source.append(re.escape(value))
            else:
                source.append(part)
        return _regex("".join(source)).fullmatch(resource) is not None


def compile_resource_pattern(text: str) -> ResourcePattern:
    """Compile a Resource pattern; raises ``ValueError`` with the problem (no path: the caller adds it)."""
    if not isinstance(text, str):
        raise ValueError(f"must be a string, not {type(text).__name__}")
    if len(text) > _MAX_LEN:
        raise ValueError(f"longer than {_MAX_LEN} characters")
    if _PRIVATE.search(text):
        raise ValueError("contains private-use characters")
    tokens = split_template(text)
    names: list[Var] = []
    masked: list[str] = []
    for token in tokens:
        if isinstance(token, Var):
            if _VAR_BASE + len(names) > _VAR_LIMIT:
                raise ValueError("too many policy variables")
            masked.append(chr(_VAR_BASE + len(names)))
            names.append(token)
        else:
            masked.append(token)
    source = _source("".join(masked), text)
    template = _unmask(source, names)
    if any(isinstance(p, Var) for p in template):
        return ResourcePattern(text, None, template)
    return ResourcePattern(text, _regex("".join(p for p in template if isinstance(p, str))), ())


def _source(masked: str, text: str) -> list[str]:
    """Regular-expression pieces for a masked pattern (variables are single private-use characters)."""
    if masked == "*":
        return [".*"]
    if not masked.startswith(_PREFIX):
        raise ValueError(f"not a resource pattern: {text!r} (expected {_SHAPE} with * globs, or *)")
    segments = masked[len(_PREFIX) :].split(":", 2)
    out = [re.escape(_PREFIX)]
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if last and index < 2 and segment == "*":
            out.append(".*")  # a short pattern ending in * matches every remaining segment
            return out
        if index == 0:
            if not _SERVICE_GLOB.fullmatch(segment):
                raise ValueError(f"{text!r}: {segment!r} is not a service (one of {', '.join(SERVICES)}, or a glob)")
            if "*" not in segment and segment not in _SERVICE_SET:
                raise ValueError(f"{text!r}: unknown service {segment!r} (one of {', '.join(SERVICES)})")
            out.append(_glob(segment, "[^:]*") + ":")
        elif index == 1:
            out.append(_scope(segment, text) + ":")
        else:
            out.append(_rest(segment, text))
    if len(segments) < 3:
        raise ValueError(f"{text!r}: incomplete resource pattern (expected {_SHAPE}, or end it with :*)")
    return out


def _scope(segment: str, text: str) -> str:
    if segment == "*":
        return "[^:]*"
    if segment == "":
        return ""
    if not segment.startswith("org/"):
        raise ValueError(f"{text!r}: scope must be org/<org path>, * or empty, not {segment!r}")
    components = segment[4:].split("/")
    for component in components:
        if not _PATH_GLOB.fullmatch(component):
            raise ValueError(f"{text!r}: {component!r} is not an org slug or glob in scope {segment!r}")
    path = "/".join(_glob(c, "[^/:]*") for c in components)
    # The org itself or any descendant: inheritance at slash boundaries only.
    return f"org/{path}(?:/[^:]*)?"


def _rest(segment: str, text: str) -> str:
    if segment == "*":
        return ".*"
    rtype, slash, rid = segment.partition("/")
    if not slash:
        raise ValueError(f"{text!r}: expected <type>/<id> (or *) after the scope, got {segment!r}")
    if not _TYPE_GLOB.fullmatch(rtype):
        raise ValueError(f"{text!r}: {rtype!r} is not a resource type or glob")
    if not _ID_GLOB.fullmatch(rid):
        raise ValueError(f"{text!r}: the id must be non-empty without white space or control characters")
    return _glob(rtype, "[^/]*") + "/" + _glob(rid, ".*")


def _glob(segment: str, star: str) -> str:
    # Variables stay as their private-use characters here; _unmask turns them into Var parts.
    return "".join(star if ch == "*" else ch if _VAR_BASE <= ord(ch) <= _VAR_LIMIT else re.escape(ch)
                   for ch in segment)


def _unmask(pieces: list[str], names: list[Var]) -> tuple[Part, ...]:
    out: list[Part] = []
    buffer: list[str] = []
    for ch in "".join(pieces):
        if _VAR_BASE <= ord(ch) <= _VAR_LIMIT:
            if buffer:
                out.append("".join(buffer))
                buffer = []
            out.append(names[ord(ch) - _VAR_BASE])
        else:
            buffer.append(ch)
    if buffer:
        out.append("".join(buffer))
    return tuple(out)
