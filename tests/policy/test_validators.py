"""Validators: published valid identifiers pass, corrupted and placeholder ones fail, nothing raises."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nexus.policy import validators
from nexus.policy.validators import entropy, iban, luhn

VALID: dict[str, list[str]] = {
    "luhn_card": ["4532015112830366", "4526 0181 5908 3012", "3737-865797-54329", "2282-1993-5181-9094",
                  "6011 2167 6060 3270", "3555979711471043"],
    "iban": ["GB82 WEST 1234 5698 7654 32", "DE89370400440532013000", "FR1420041010050500013M02606",
             "NL91ABNA0417164300", "IT60X0542811101000000123456", "CH9300762011623852957"],
    "ssn": ["601-42-4250", "123-45-6789", "488 25 0477"],
    "itin": ["986-88-3628", "905-88-1554"],
    "aba_routing": ["021000021", "011000015", "026009593"],
    "swift_bic": ["DEUTDEFF", "NWBKGB2L", "CHASUS33XXX", "GENODEF1XXX"],
    "track_data": ["%B4526018159083012^SMITH/JOHN^2709101000000000?", ";4526018159083012=2709101000000000?"],
    "uk_nino": ["AB123456C", "ZT 87 47 16 B"],
    "de_tax_id": ["86095742719", "28131795049", "65 929 970 489"],
    "es_dni": ["12345678Z", "X1234567L", "Z3095718S"],
    "it_codice_fiscale": ["RSSMRA85T10A562S", "RIDARG61M06R415W"],
    "fr_nir": ["1 84 12 76 451 089 46", "269113393698807"],
    "nl_bsn": ["111222333", "123456782"],
    "in_aadhaar": ["2341 2341 2346", "499118665246"],
    "in_pan": ["ABCPE1234F", "BNZPM2501F"],
    "br_cpf": ["529.982.247-25", "111.444.777-35"],
    "br_cnpj": ["11.222.333/0001-81"],
    "pl_pesel": ["44051401359", "02070803628"],
    "cn_resident_id": ["11010519491231002X", "513178199106018057"],
    "sg_nric": ["S1234567D", "T0123456G"],
    "au_tfn": ["123456782", "876543210"],
    "jp_my_number": ["123456789018"],
    "se_personnummer": ["811228-9874", "19811228-9874"],
    "ca_sin": ["100 372 994", "610-698-268"],
    "npi": ["1234567893", "1540613589"],
    "dea": ["AB1234563", "MJ4529078"],
    "nhs_number": ["943 476 5919", "9857229697"],
    "au_medicare": ["2123 45670 1", "6801341105"],
    "imei": ["490154203237518", "35-209900-176148-1"],
    "vin": ["1HGCM82633A004352", "WVWZZZ1JZXW000001"],
    "ipv4": ["8.8.8.8", "10.0.0.1", "255.255.255.0"],
    "public_ipv4": ["81.2.69.160", "203.0.113.45", "8.8.4.4"],
    "public_ipv6": ["2a00:1450:4001:81b::200e", "2001:db8::1:0:0:1"],
    "mac": ["3C:22:FB:8A:91:0E", "a4-5e-60-c1-7d-23"],
    "email": ["maria.gonzalez84@gmail.com", "j.smith@acme-corp.co.uk", "jane.doe@example.com"],
    "phone_e164": ["+44 20 7946 0958", "+1 (415) 555-2671", "+8613800138000"],
    "nanp_phone": ["(415) 555-2671", "212-555-0147", "+1 646.555.0199"],
    "phone_national": ["06 12 34 56 78", "0151 23456789"],
    "person_name": ["Maria Gonzalez", "Robert O'Neill", "Jean-Luc Picard"],
    "date_of_birth": ["1984-03-12", "03/14/1985", "24.12.1990", "March 5, 1984", "5 mars 1984", "1988年6月3日"],
    "document_number": ["533380006", "C01X00T47", "D1234-5678-9012"],
    "token": ["ghp_DZFlRJmCGmUXiAPyhzAnar3ZLt4bnlz2MPKg", "sk-5f8c2a9d1e7b4c3a8f6e2d1b9c7a5e3f",
              "AKIAIOSFODNN7EXAMPLE"],
    "high_entropy": ["9f8e7d6c5b4a39281716fe3d2c1b0a9f", "Zq8vT2mR6xW1yL4pN9bK3dF7hJ0sC5aE"],
    "password": ["hunter22x", "Tr0ub4dor&3", "Summer2024!", "correcthorsebatterystaple"],
    "aws_access_key_id": ["AKIA454ML6LG4TJFCZ4K", "ASIA2M4KO32M3TRO26JT", "AKIAIOSFODNN7EXAMPLE"],
    "url_credentials": ["deploy:Zx9!qR2m", "app_rw:Tr0ub4dor%263"],
    "b64_userpass": ["YWRtaW46VzN0LWxhbmQtOTIh"],
    "jwt": ["eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2"
            "MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"],
    "base58check": ["5HueCGU8rMjxEXxiPuD5BDku4MkFqeZyd4dZ1jvhTVqvbTLvyTJ", "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa"],
}

INVALID: dict[str, list[str]] = {
    "luhn_card": ["4532015112830367", "4111111111111111", "4242 4242 4242 4242", "1234567890123456",
                  "4532 0151 1283", "9999999999999999995", "5105105105105100"],
    "iban": ["DE89370400440532013001", "GB82 WEST 1234 5698 7654 3", "XX82WEST12345698765432",
             "DE00370400440532013000"],
    "ssn": ["000-12-3456", "666-45-6789", "912-45-6789", "123-00-6789", "123-45-0000", "078-05-1120", "111-11-1111"],
    "itin": ["986-88-0000", "912-45-6789", "123-88-3628"],
    "aba_routing": ["123456789", "021000022", "000000000", "991000021"],
    "swift_bic": ["PASSWORD", "DEUTXXFF", "DEUT DE FF", "DEUTDE0F"],
    "track_data": ["%B4111111111111111^TEST^2709?", ";1234=1?", "no track"],
    "uk_nino": ["QQ123456C", "GB123456A", "AB123456E", "DA123456A", "AB000000A"],
    "de_tax_id": ["86095742718", "01234567890", "11111111111", "12345678901"],
    "es_dni": ["12345678A", "X1234567Z", "00000000T"],
    "it_codice_fiscale": ["RSSMRA85T10A562T", "RSSMRA85Z10A562S", "1234567890123456"],
    "fr_nir": ["1 84 12 76 451 089 47", "5 84 12 76 451 089 46", "1 84 13 76 451 089 46"],
    "nl_bsn": ["111222334", "000000000", "123456789"],
    "in_aadhaar": ["2341 2341 2345", "1341 2341 2346", "222222222222"],
    "in_pan": ["ABCXE1234F", "ABCPE12345", "1BCPE1234F"],
    "br_cpf": ["529.982.247-26", "111.111.111-11", "123.456.789-00"],
    "br_cnpj": ["11.222.333/0001-82", "00.000.000/0000-00"],
    "pl_pesel": ["44051401358", "44151401359", "00000000000"],
    "cn_resident_id": ["110105194912310021", "110105209912310021", "11010519491331002X"],
    "sg_nric": ["S1234567A", "A1234567D", "M1234567K"],
    "au_tfn": ["123456789", "111111111"],
    "jp_my_number": ["123456789012", "111111111111"],
    "se_personnummer": ["811228-9875", "811328-9874"],
    "ca_sin": ["046 454 287", "046 454 286", "812 345 670"],
    "npi": ["1234567890", "3234567893"],
    "dea": ["AB1234567", "A11234563"],
    "nhs_number": ["943 476 5910", "1111111111"],
    "au_medicare": ["2123 45671 1", "7123 45670 1"],
    "imei": ["490154203237519", "000000000000000"],
    "vin": ["1HGCM82633A004353", "11111111111111111", "1HGCM82633A00435O"],
    "ipv4": ["256.1.1.1", "1.2.3", "01.2.3.4", "0.0.0.0", "1.2.3.4.5"],
    "public_ipv4": ["10.0.3.17", "192.168.1.1", "127.0.0.1", "100.64.1.1", "224.0.0.1", "172.16.5.4"],
    "public_ipv6": ["fe80::1ff:fe23:4567:890a", "::1", "fd00::1:2:3", "not:an:ip:addr"],
    "mac": ["ff:ff:ff:ff:ff:ff", "00:00:00:00:00:00", "12:30:45:10:20:00", "3C:22:FB-8A:91:0E", "01:00:5e:00:00:fb"],
    "email": ["noreply@github.com", "user@example.com", "logo@2x.png", "pkg@1.2.3", "support@stripe.com",
              "someone@company.test", "me@localhost.local"],
    "phone_e164": ["+1 555 5555555", "+0 123 456 789", "+1234567890123456", "+1 (415 555 2671"],
    "nanp_phone": ["123-456-7890", "555-555-5555", "(212) 155-0147", "911-555-0147"],
    "phone_national": ["2024", "000-000-0000", "123456789"],
    "person_name": ["Enter your name", "String", "TEST USER", "N/A"],
    "date_of_birth": ["2099-01-01", "31/02/1990", "99/99/9999", "1850-01-01", "born on a Tuesday"],
    "document_number": ["expired", "required", "000000000", "ABCDEFGH1"],
    "token": ["AKIAXXXXXXXXXXXXXXXX", "sk-...", "your-api-key-here", "ghp_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
              "sk_live_<your-key>", "${STRIPE_SECRET}", "aaaaaaaaaaaaaaaaaaaaaaaa"],
    "high_entropy": ["your_api_key_here", "xxxxxxxxxxxxxxxxxxxxxxxx", "settings.CLIENT_SECRET", "abcdabcdabcdabcd",
                     "${API_TOKEN_VALUE}", "short"],
    "password": ["${DB_PASSWORD}", "********", "<password>", "changeme", "password", "reset", "string",
                 "os.environ", "xxxxxxxx"],
    "aws_access_key_id": ["AKIAXXXXXXXXXXXXXXXX", "AKIA1111111111111111", "BKIA454ML6LG4TJFCZ4K", "AKIA454ML6LG4TJ"],
    "url_credentials": ["user:password", "admin:admin", "${USER}:${PASS}", "user:<password>", "deploy:"],
    "b64_userpass": ["dXNlcjpwYXNzd29yZA==", "not base64!", "aGVsbG8gd29ybGQ="],
    "jwt": ["eyJub3RhIjoiand0In0.eyJzdWIiOiIxIn0.sig", "a.b.c", "eyJhbGciOiJIUzI1NiJ9"],
    "base58check": ["5HueCGU8rMjxEXxiPuD5BDku4MkFqeZyd4dZ1jvhTVqvbTLvyTK", "0OIl",
                    "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNb"],
}


def _cases(table: dict[str, list[str]]) -> list[tuple[str, str]]:
    return [(name, value) for name, values in table.items() for value in values]


@pytest.mark.parametrize(("name", "value"), _cases(VALID))
def test_valid_values_pass(name: str, value: str) -> None:
    assert validators.get(name)(value)


@pytest.mark.parametrize(("name", "value"), _cases(INVALID))
def test_invalid_values_fail(name: str, value: str) -> None:
    assert not validators.get(name)(value)


def test_every_registered_validator_is_covered() -> None:
    assert set(validators.NAMES) == set(VALID) == set(INVALID)


def test_checksum_primitives() -> None:
    assert luhn.luhn_ok("79927398713") and not luhn.luhn_ok("79927398710") and not luhn.luhn_ok("7992x398713")
    assert iban.mod97("3214282912345698765432161182") == 1
    assert entropy.shannon("") == 0.0 and entropy.shannon("aaaa") == 0.0
    assert entropy.shannon("abcd") == pytest.approx(2.0)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_validators_never_raise(value: str) -> None:
    for name in validators.NAMES:
        assert validators.get(name)(value) in (True, False)
