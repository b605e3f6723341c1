"""Mongo-style predicates: every operator, nesting, every field, and rejection of bad input at compile time."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nexus.gateway.routing.predicate import PredicateError, RouteRequest, compile_predicate
from nexus.net.http1.types import Headers

REQ = RouteRequest(
    "gpt-4o", "chat", "req-1", "vk-1", "org-1", "acme/emea/sales", "proj-1", "user-1",
    Headers([(b"content-type", b"application/json"), (b"x-team", b"ML"), (b"x-team", b"second")]),
    {"tier": "gold", "budget": 250, "ratio": 0.5, "flag": True, "tags": ["a", "b"], "deep": {"er": {"x": "y"}}},
)


def matches(spec: Any, request: RouteRequest = REQ) -> bool:
    return compile_predicate(spec)(request)


@pytest.mark.parametrize(("spec", "expected"), [
    ({}, True),
    ({"model": "gpt-4o"}, True),
    ({"model": "gpt-4"}, False),
    ({"model": {"$eq": "gpt-4o"}}, True),
    ({"model": {"$ne": "gpt-4o"}}, False),
    ({"model": {"$ne": "claude"}}, True),
    ({"model": {"$in": ["claude", "gpt-4o"]}}, True),
    ({"model": {"$in": []}}, False),
    ({"model": {"$nin": ["claude", "gpt-4o"]}}, False),
    ({"model": {"$nin": ["claude"]}}, True),
    ({"model": {"$regex": "^gpt-4"}}, True),
    ({"model": {"$regex": "4o$"}}, True),
    ({"model": {"$regex": "GPT"}}, False),
    ({"model": {"$regex": "GPT", "$options": "i"}}, True),
    ({"metadata.budget": {"$gt": 249}}, True),
    ({"metadata.budget": {"$gt": 250}}, False),
    ({"metadata.budget": {"$gte": 250}}, True),
    ({"metadata.budget": {"$lt": 250}}, False),
    ({"metadata.budget": {"$lte": 250}}, True),
    ({"metadata.ratio": {"$gt": 0.25, "$lt": 0.75}}, True),
    ({"metadata.tier": {"$gt": "b"}}, True),          # strings compare with strings
    ({"metadata.tier": {"$gt": 1}}, False),           # and never with numbers
    ({"metadata.budget": {"$gt": "1"}}, False),
    ({"metadata.flag": {"$gt": 0}}, False),           # a boolean is not a number here
    ({"metadata.missing": {"$lt": 10}}, False),
    ({"user_id": {"$exists": True}}, True),
    ({"user_id": {"$exists": False}}, False),
    ({"metadata.missing": {"$exists": False}}, True),
    ({"metadata.missing": None}, True),
    ({"metadata.tier": None}, False),
    ({"model": {"$prefix": "gpt-"}}, True),
    ({"model": {"$prefix": "claude"}}, False),
    ({"org_path": {"$prefix": "acme/emea"}}, True),
    ({"org_path": {"$prefix": "acme/emea/"}}, True),
    ({"org_path": {"$prefix": "acme/emea/sales"}}, True),
    ({"org_path": {"$prefix": "acme/em"}}, False),    # whole segments only on org_path
    ({"org_path": {"$prefix": "other"}}, False),
    ({"model": {"$not": {"$regex": "^claude"}}}, True),
    ({"model": {"$not": {"$in": ["gpt-4o"]}}}, False),
    ({"$not": {"model": "gpt-4o"}}, False),
    ({"$and": [{"model": "gpt-4o"}, {"endpoint": "chat"}]}, True),
    ({"$and": [{"model": "gpt-4o"}, {"endpoint": "embeddings"}]}, False),
    ({"$or": [{"model": "claude"}, {"endpoint": "chat"}]}, True),
    ({"$or": [{"model": "claude"}, {"endpoint": "embeddings"}]}, False),
    ({"model": "gpt-4o", "endpoint": "embeddings"}, False),  # several keys: all must hold
    ({"model": {"$regex": "^gpt", "$ne": "gpt-4o"}}, False),
    ({"$or": [{"$and": [{"model": "x"}, {"user_id": "user-1"}]},
              {"$not": {"$or": [{"project_id": "proj-2"}, {"org_id": {"$in": ["org-2"]}}]}}]}, True),
    ({"$and": [{"$or": [{"model": "x"}, {"model": "y"}]}, {"user_id": "user-1"}]}, False),
])
def test_operators(spec: Any, expected: bool) -> None:
    assert matches(spec) is expected


@pytest.mark.parametrize(("field", "value"), [
    ("model", "gpt-4o"), ("endpoint", "chat"), ("request_id", None), ("virtual_key_id", "vk-1"), ("org_id", "org-1"),
    ("org_path", "acme/emea/sales"), ("project_id", "proj-1"), ("user_id", "user-1"),
])
def test_plain_fields(field: str, value: str | None) -> None:
    if value is None:  # request_id is not a routing fact
        with pytest.raises(PredicateError, match="unknown field 'request_id'"):
            compile_predicate({field: "x"})
        return
    assert matches({field: value})
    assert not matches({field: value + "-other"})


def test_headers_are_case_insensitive_and_first_value_wins() -> None:
    assert matches({"headers.X-Team": "ML"})
    assert matches({"headers.x-team": {"$regex": "^ml$", "$options": "i"}})
    assert not matches({"headers.x-team": "second"})
    assert matches({"headers.x-missing": {"$exists": False}})
    # A plain dict of lower-case names works as well as the server's Headers.
    assert matches({"headers.x-team": "a"}, RouteRequest("m", headers={"x-team": "a"}))


def test_metadata_nested_and_non_scalar_values() -> None:
    assert matches({"metadata.deep.er.x": "y"})
    assert not matches({"metadata.deep.er.x.z": "y"})       # through a string: missing
    assert matches({"metadata.deep.nope.x": {"$exists": False}})
    assert matches({"metadata.tags": ["a", "b"]})            # values compare whole
    assert matches({"metadata.tags": {"$in": [["a", "b"], "c"]}})  # unhashable values still work in $in
    assert matches({"metadata.deep": {"$nin": [{"er": 1}]}})


@pytest.mark.parametrize(("spec", "message"), [
    ([], r"\$: a predicate must be an object, got list"),
    ("model", r"a predicate must be an object, got str"),
    ({"modle": "x"}, r"\$\.modle: unknown field 'modle'"),
    ({"headers.": "x"}, r"unknown field 'headers\.'"),
    ({"headers.bad name": "x"}, r"'bad name' is not a valid header name"),
    ({"metadata.a..b": "x"}, r"empty key in 'metadata\.a\.\.b'"),
    ({"$nor": []}, r"\$\.\$nor: unknown operator '\$nor'"),
    ({"$and": {}}, r"\$\.\$and: needs a non-empty array"),
    ({"$or": []}, r"\$\.\$or: needs a non-empty array"),
    ({"$or": [{"model": "x"}, 3]}, r"\$\.\$or\[1\]: a predicate must be an object, got int"),
    ({"$not": "x"}, r"\$\.\$not: a predicate must be an object"),
    ({"model": {"$foo": 1}}, r"\$\.model\.\$foo: unknown operator '\$foo'"),
    ({"model": {"$in": "gpt-4o"}}, r"\$\.model\.\$in: needs an array"),
    ({"model": {"$nin": None}}, r"\$\.model\.\$nin: needs an array"),
    ({"model": {"$regex": 5}}, r"\$regex needs a string"),
    ({"model": {"$regex": "("}}, r"invalid regular expression '\('"),
    ({"model": {"$regex": "x", "$options": "q"}}, r"\$options takes letters from 'ims'"),
    ({"model": {"$options": "i"}}, r"\$options: only valid beside \$regex"),
    ({"metadata.n": {"$gt": True}}, r"\$gt: needs a number or a string"),
    ({"metadata.n": {"$lte": [1]}}, r"\$lte: needs a number or a string"),
    ({"model": {"$exists": 1}}, r"\$exists: needs true or false"),
    ({"model": {"$prefix": ""}}, r"\$prefix needs a non-empty string"),
    ({"model": {"$not": "x"}}, r"\$not: needs an operator object"),
    ({"model": {"$not": {"model": "x"}}}, r"\$not: needs an operator object"),
    ({"$or": [{"$and": [{"model": {"$regex": "["}}]}]}, r"\$\.\$or\[0\]\.\$and\[0\]\.model\.\$regex: invalid"),
])
def test_invalid_predicates_are_rejected_with_their_place(spec: Any, message: str) -> None:
    with pytest.raises(PredicateError, match=message):
        compile_predicate(spec)


def test_nesting_is_bounded() -> None:
    spec: dict[str, Any] = {"model": "x"}
    for _ in range(40):
        spec = {"$not": spec}
    with pytest.raises(PredicateError, match="nested deeper than 32"):
        compile_predicate(spec)


def test_regex_is_compiled_once(monkeypatch: pytest.MonkeyPatch) -> None:
    pred = compile_predicate({"$or": [{"model": {"$regex": "^claude"}}, {"headers.x-team": {"$regex": "ml",
                                                                                             "$options": "i"}}]})

    def no_compiling(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("regex compiled while matching")

    monkeypatch.setattr(re, "compile", no_compiling)
    monkeypatch.setattr(re, "search", no_compiling)
    assert pred(REQ)
    assert not pred(RouteRequest("gpt-4o"))


@given(st.text(max_size=8), st.lists(st.text(max_size=8), max_size=5))
def test_nin_and_not_negate(model: str, values: list[str]) -> None:
    request = RouteRequest(model)
    inside = compile_predicate({"model": {"$in": values}})(request)
    assert inside == (model in values)
    assert compile_predicate({"model": {"$nin": values}})(request) is not inside
    assert compile_predicate({"$not": {"model": {"$in": values}}})(request) is not inside
    assert compile_predicate({"model": {"$not": {"$in": values}}})(request) is not inside
