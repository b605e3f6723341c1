"""mask_secrets: secret values become "***", references, counts and ordinary fields stay readable."""

from __future__ import annotations

import copy

import pytest

from nexus.controlplane.audit.mask import MASK, mask_secrets
from nexus.crypto import vkeys


@pytest.mark.parametrize("key", [
    "secret", "client_secret", "clientSecret", "password", "password_hash", "new-password", "api_key", "apiKey",
    "API_KEY", "token", "access_token", "refreshToken", "ciphertext", "client_secret_ciphertext", "nonce",
    "totp_nonce", "private_key", "privateKey", "private", "totp", "totp_secret", "Authorization", "cookie",
    "secret_access_key", "signing_key", "pin", "otp", "passphrase",
])
def test_secret_keys_are_masked(key: str) -> None:
    assert mask_secrets({key: "s3cr3t-value"}) == {key: MASK}
    assert mask_secrets({key: 123456}) == {key: MASK}


@pytest.mark.parametrize("key", [
    "id", "credential_id", "key_id", "client_secret_key_id", "totp_key_id", "api_key_id", "token_id",
    "totp_enabled_at", "password_changed_at", "rotated_at", "secret_hint", "key_prefix", "max_tokens",
    "input_tokens", "name", "region", "rpm", "tpm", "allowed_models", "group_mappings", "tokenizer",
    "credential_name", "token_type", "description", "shipping", "mapping",
])
def test_reference_and_ordinary_keys_are_kept(key: str) -> None:
    assert mask_secrets({key: "visible-value"}) == {key: "visible-value"}


def test_whole_values_under_secret_keys_are_masked_but_null_and_booleans_kept() -> None:
    doc = {"private": {"kty": "OKP", "d": "raw-private-scalar"}, "secret": ["a", "b"], "password": None,
           "totp": True, "must_change_password": False}
    assert mask_secrets(doc) == {"private": MASK, "secret": MASK, "password": None, "totp": True,
                                 "must_change_password": False}


def test_credential_resources_keep_their_names_and_lose_their_secrets() -> None:
    doc = {"credential": "sk-live-abc", "credentials": [{"id": "c1", "name": "primary", "secret": "sk-1",
                                                         "secret_hint": "k-1"}]}
    assert mask_secrets(doc) == {"credential": MASK, "credentials": [
        {"id": "c1", "name": "primary", "secret": MASK, "secret_hint": "k-1"}]}


def test_key_is_masked_only_when_it_holds_a_whole_key() -> None:
    full = "sk-proj-" + "x" * 40
    assert mask_secrets({"key": full}) == {"key": MASK}
    assert mask_secrets({"tags": [{"key": "region", "value": "eu"}]}) == {"tags": [{"key": "region", "value": "eu"}]}
    prose = "a sentence with spaces that is long"
    assert mask_secrets({"key": prose}) == {"key": prose}


def test_virtual_keys_are_masked_anywhere() -> None:
    key = vkeys.generate()
    assert mask_secrets({"note": key, "list": ["fine", key]}) == {"note": MASK, "list": ["fine", MASK]}


def test_nested_documents_are_searched_and_the_input_is_not_changed() -> None:
    doc = {"provider": {"name": "openai", "settings": {"headers": {"Authorization": "Bearer sk-1", "X-Trace": "1"}},
                        "credentials": [{"name": "a", "api_key": "sk-a"}]}, "rpm": 10}
    before = copy.deepcopy(doc)
    masked = mask_secrets(doc)
    assert doc == before
    assert masked == {"provider": {"name": "openai", "settings": {"headers": {"Authorization": MASK, "X-Trace": "1"}},
                                   "credentials": [{"name": "a", "api_key": MASK}]}, "rpm": 10}
    assert mask_secrets(masked) == masked  # idempotent
