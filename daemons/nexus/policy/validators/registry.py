"""Validator names used in rule packs → functions.  Adding a validator means adding it here."""

from __future__ import annotations

from collections.abc import Callable

from nexus.policy.validators import (
    contact,
    crypto,
    dates,
    devices,
    entropy,
    finance,
    health,
    iban,
    jwt,
    luhn,
    national_id,
    network,
    ssn,
)

Validator = Callable[[str], bool]

_REGISTRY: dict[str, Validator] = {
    # payment and banking
    "luhn_card": luhn.card,
    "iban": iban.iban,
    "aba_routing": finance.aba_routing,
    "swift_bic": finance.swift_bic,
    "track_data": finance.track_data,
    # US identifiers
    "ssn": ssn.ssn,
    "itin": ssn.itin,
    # national ids
    "uk_nino": national_id.uk_nino,
    "de_tax_id": national_id.de_tax_id,
    "es_dni": national_id.es_dni,
    "it_codice_fiscale": national_id.it_codice_fiscale,
    "fr_nir": national_id.fr_nir,
    "nl_bsn": national_id.nl_bsn,
    "in_aadhaar": national_id.in_aadhaar,
    "in_pan": national_id.in_pan,
    "br_cpf": national_id.br_cpf,
    "br_cnpj": national_id.br_cnpj,
    "pl_pesel": national_id.pl_pesel,
    "cn_resident_id": national_id.cn_resident_id,
    "sg_nric": national_id.sg_nric,
    "au_tfn": national_id.au_tfn,
    "jp_my_number": national_id.jp_my_number,
    "se_personnummer": national_id.se_personnummer,
    "document_number": national_id.document_number,
    "ca_sin": luhn.ca_sin,
    # healthcare
    "npi": health.npi,
    "dea": health.dea,
    "nhs_number": health.nhs_number,
    "au_medicare": health.au_medicare,
    # contact details and dates
    "email": contact.email,
    "phone_e164": contact.phone_e164,
    "nanp_phone": contact.nanp_phone,
    "phone_national": contact.phone_national,
    "person_name": contact.person_name,
    "date_of_birth": dates.date_of_birth,
    # network and devices
    "ipv4": network.ipv4,
    "public_ipv4": network.public_ipv4,
    "public_ipv6": network.public_ipv6,
    "mac": network.mac,
    "imei": luhn.imei,
    "vin": devices.vin,
    # secrets
    "token": entropy.token,
    "high_entropy": entropy.high_entropy,
    "password": entropy.password,
    "aws_access_key_id": entropy.aws_access_key_id,
    "url_credentials": entropy.url_credentials,
    "b64_userpass": entropy.b64_userpass,
    "jwt": jwt.jwt,
    "base58check": crypto.base58check,
}

NAMES: tuple[str, ...] = tuple(sorted(_REGISTRY))


def get(name: str) -> Validator:
    """The validator called ``name``; ``KeyError`` if there is none (the loader rejects unknown names)."""
    return _REGISTRY[name]
