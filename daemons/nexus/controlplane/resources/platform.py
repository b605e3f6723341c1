"""Organizations and projects: the tree every other resource is scoped to."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, Literal

import attrs

from nexus.controlplane.api.crud import Resource
from nexus.controlplane.api.crud import operations as crud_operations
from nexus.controlplane.api.operation import Operation
from nexus.controlplane.api.schema import field

SLUG = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"


@attrs.frozen
class Organization:
    """An organization; ``path`` is its place in the tree and the scope of its NRNs."""

    id: uuid.UUID
    parent_id: uuid.UUID | None
    slug: str
    path: str
    name: str
    status: Literal["active", "suspended"]
    settings: dict[str, Any]
    tags: dict[str, Any]
    created_at: dt.datetime
    updated_at: dt.datetime


@attrs.frozen
class OrganizationCreate:
    """A new organization; without ``parent_id`` it is a new tree root (super-admins only)."""

    slug: str = field(pattern=SLUG, max_length=63)
    name: str = field(min_length=1, max_length=200)
    parent_id: uuid.UUID | None = None
    settings: dict[str, Any] = field(factory=dict)
    tags: dict[str, str] = field(factory=dict)


@attrs.frozen
class OrganizationUpdate:
    """Fields an organization update may change."""

    name: str = field(min_length=1, max_length=200)
    status: Literal["active", "suspended"] = "active"
    settings: dict[str, Any] = field(factory=dict)
    tags: dict[str, str] = field(factory=dict)


@attrs.frozen
class Project:
    """A project inside an organization; application keys and budgets hang off it."""

    id: uuid.UUID
    org_id: uuid.UUID
    slug: str
    name: str
    description: str
    status: Literal["active", "archived"]
    settings: dict[str, Any]
    tags: dict[str, Any]
    created_at: dt.datetime
    updated_at: dt.datetime


@attrs.frozen
class ProjectCreate:
    """A new project."""

    org_id: uuid.UUID
    slug: str = field(pattern=SLUG, max_length=63)
    name: str = field(min_length=1, max_length=200)
    description: str = field(default="", max_length=2000)
    settings: dict[str, Any] = field(factory=dict)
    tags: dict[str, str] = field(factory=dict)


@attrs.frozen
class ProjectUpdate:
    """Fields a project update may change."""

    name: str = field(min_length=1, max_length=200)
    description: str = field(default="", max_length=2000)
    status: Literal["active", "archived"] = "active"
    settings: dict[str, Any] = field(factory=dict)
    tags: dict[str, str] = field(factory=dict)


ORGANIZATIONS = Resource(
    path="orgs", rtype="organization", service="platform", table="organization", read=Organization,
    create=OrganizationCreate, update=OrganizationUpdate, tag="platform", signal="organization", org="self",
    filters=("parent_id", "status"), tags_column="tags", order="created_at",
)
PROJECTS = Resource(
    path="projects", rtype="project", service="platform", table="project", read=Project, create=ProjectCreate,
    update=ProjectUpdate, tag="platform", signal="project", filters=("org_id", "status"), tags_column="tags",
)


def operations() -> list[Operation]:
    return crud_operations([ORGANIZATIONS, PROJECTS])
