"""runnerd/signing.py against the test vectors of reference/provider-compute.md §4.5 (Ocean Provider's
scheme: keccak256 of the text, then EIP-191 personal-sign over the 32-byte hash)."""

from __future__ import annotations

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct

from runnerd import signing

KEY = "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
ADDRESS = "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23"
DID = "did:op:0c184915b07b44c888d468be85a9b28253e80070e5294b1aaed81c2f0264e429"
JOB = "4d32947065bb46c8b87c1f7adfb7ed8b"
OTHER_ADDRESS = Account.from_key("0x" + "11" * 32).address

VECTORS = [
    pytest.param(
        [ADDRESS, DID], "5",
        "0xa38b236c05d08cce1f24e3a88dca5b2ba86230da0d996384a263a4c768139f9e4c3e46e1352457349b1e95d93aca0ecab7bc0d8598e"
        "670c9ef0d79740e73b2481c",
        id="POST-nonce5"),
    pytest.param(
        [ADDRESS, JOB, DID], "6",
        "0x11a573e1375101de214d4ffd4fb40790ddc2d46d321af045866f067301dc926e4fe53b27dba086d4d9b69a78fb075d3312def57e0c1"
        "66cf4ab52787243ccc5d41b",
        id="PUT-DELETE-nonce6"),
    pytest.param(
        [ADDRESS, JOB, "0"], "7",
        "0x6cb5d815f6125aae8f94c47bc5a35b24ce3657a3fbfb5ab759b7cecf3694f50a1f9d80953ccee1c9c143c129c7ec29e3333669f2e1a"
        "e53bc83ecd964897047541b",
        id="computeResult-index0-nonce7"),
]


def with_v(signature: str, v: int) -> str:
    return signature[:-2] + f"{v:02x}"


def test_key_and_address_of_the_vectors():
    assert Account.from_key(KEY).address == ADDRESS
    assert signing.is_address(ADDRESS) and signing.is_address(ADDRESS.lower())
    assert not signing.is_address(ADDRESS[2:]) and not signing.is_address(ADDRESS + "0")
    assert not signing.is_address(None) and not signing.is_address(12)


@pytest.mark.parametrize("parts, nonce, signature", VECTORS)
def test_vector_verifies_with_v_27_28(parts, nonce, signature):
    assert int(signature[-2:], 16) in (27, 28)
    assert signing.recover_signer(parts, nonce, signature) == ADDRESS
    assert signing.verify(ADDRESS, parts, nonce, signature)
    # addresses compare case-insensitively
    assert signing.verify(ADDRESS.lower(), parts, nonce, signature)
    assert signing.verify("0x" + ADDRESS[2:].upper(), parts, nonce, signature)


@pytest.mark.parametrize("parts, nonce, signature", VECTORS)
def test_vector_verifies_with_v_rewritten_to_0_1(parts, nonce, signature):
    v = int(signature[-2:], 16)
    ocean_py_form = with_v(signature, v - 27)
    assert ocean_py_form != signature
    assert signing.verify(ADDRESS, parts, nonce, ocean_py_form)


@pytest.mark.parametrize("parts, nonce, signature", VECTORS)
def test_vector_verifies_without_0x_and_in_upper_case(parts, nonce, signature):
    assert signing.verify(ADDRESS, parts, nonce, signature[2:])
    assert signing.verify(ADDRESS, parts, nonce, "0x" + signature[2:].upper())
    assert signing.verify(ADDRESS, parts, nonce, with_v(signature, int(signature[-2:], 16) - 27)[2:])


@pytest.mark.parametrize("parts, nonce, signature", VECTORS)
def test_sign_reproduces_the_vector_exactly(parts, nonce, signature):
    """RFC 6979 makes ECDSA deterministic: same key and text, same signature, every time."""
    produced = signing.sign(KEY, parts, nonce)
    assert produced == signature
    assert signing.sign(bytes.fromhex(KEY[2:]), parts, nonce) == signature
    assert signing.verify(ADDRESS, parts, nonce, produced)


@pytest.mark.parametrize("parts, nonce, signature", VECTORS)
def test_wrong_address_is_rejected(parts, nonce, signature):
    assert not signing.verify(OTHER_ADDRESS, parts, nonce, signature)


@pytest.mark.parametrize("parts, nonce, signature", VECTORS)
def test_wrong_nonce_text_is_rejected(parts, nonce, signature):
    """The nonce is part of the signed text, as its exact decimal text."""
    assert not signing.verify(ADDRESS, parts, str(int(nonce) + 1), signature)
    assert not signing.verify(ADDRESS, parts, nonce + ".0", signature)
    assert not signing.verify(ADDRESS, parts, "0" + nonce, signature)


def test_wrong_message_parts_are_rejected():
    parts, nonce, signature = VECTORS[1].values
    assert not signing.verify(ADDRESS, [ADDRESS, DID, JOB], nonce, signature)  # order matters
    assert not signing.verify(ADDRESS, [ADDRESS.lower(), JOB, DID], nonce, signature)  # exact address text
    assert not signing.verify(ADDRESS, [ADDRESS, "", DID], nonce, signature)


@pytest.mark.parametrize("bad", [
    pytest.param(lambda s: s[:-2], id="truncated-by-one-byte"),
    pytest.param(lambda s: s[:66], id="only-r"),
    pytest.param(lambda s: s + "00", id="one-byte-too-long"),
    pytest.param(lambda s: "", id="empty"),
    pytest.param(lambda s: "0x" + "zz" * 65, id="not-hex"),
    pytest.param(lambda s: with_v(s, 29), id="v-29"),
    pytest.param(lambda s: with_v(s, 2), id="v-2"),
    pytest.param(lambda s: "0x" + "00" * 64 + "1b", id="zero-r-s"),
    pytest.param(lambda s: None, id="none"),
    pytest.param(lambda s: bytes.fromhex(s[2:]), id="bytes-not-text"),
])
def test_malformed_signature_is_rejected_without_raising(bad):
    parts, nonce, signature = VECTORS[0].values
    assert signing.recover_signer(parts, nonce, bad(signature)) is None
    assert not signing.verify(ADDRESS, parts, nonce, bad(signature))


def test_plain_personal_sign_over_the_text_is_rejected():
    """Ocean signs the keccak hash of the text, not the text itself (provider-compute.md §4.2 step 7)."""
    parts, nonce = [ADDRESS, DID], "5"
    text = "".join(parts) + nonce
    plain = Account.sign_message(encode_defunct(text=text), private_key=KEY).signature.hex()
    plain = plain if plain.startswith("0x") else "0x" + plain
    assert Account.recover_message(encode_defunct(text=text), signature=plain) == ADDRESS  # a valid signature...
    assert not signing.verify(ADDRESS, parts, nonce, plain)  # ...of the wrong thing
    assert signing.recover_signer(parts, nonce, plain) != ADDRESS


def test_message_hash_is_keccak_of_the_concatenated_text():
    from eth_utils import keccak

    assert signing.message_hash([ADDRESS, JOB, DID], "6") == keccak(text=f"{ADDRESS}{JOB}{DID}6")
    assert signing.message_hash([], "1") == keccak(text="1")


def test_sign_output_shape_and_roundtrip_with_fresh_key():
    key = "0x" + "42" * 32
    address = Account.from_key(key).address
    sig = signing.sign(key, [address, JOB, "3"], "1693212345678123456")
    assert sig.startswith("0x") and len(sig) == 132 and int(sig[-2:], 16) in (27, 28)
    assert signing.verify(address, [address, JOB, "3"], "1693212345678123456", sig)
    assert not signing.verify(address, [address, JOB, "3"], "1693212345678123457", sig)


# ------------------------------------------------------------------------------ nonce_text


@pytest.mark.parametrize("value, text", [
    (5, "5"),
    (0, "0"),
    ("5", "5"),
    ("42", "42"),
    (1693212345678123456, "1693212345678123456"),  # time_ns as a JSON number
    ("1693212345678123456", "1693212345678123456"),  # time_ns as ocean.js sends it
    ("1693212345678.123", "1693212345678.123"),  # legacy float-ms string, kept as exact text
    ("007", "007"),  # the exact text is what was signed
    (12.0, "12"),  # an integral JSON float
])
def test_nonce_text_accepts(value, text):
    assert signing.nonce_text(value) == text


@pytest.mark.parametrize("value", [
    True, False,
    -1, "-1", -1.0,
    1.5, 1693212345678.123,  # a JSON float with a fraction lost the client's text
    float("nan"), float("inf"),
    "", " 5", "5 ", "abc", "5a", "1e5", "0x10", "1.", ".5", "1.2.3", "+5", "NaN", "Infinity",
    None, [5], {"n": 5}, b"5",
    "1" * 31,
])
def test_nonce_text_rejects(value):
    assert signing.nonce_text(value) is None


def test_nonces_compare_formats_numerically():
    """Nonces compare as decimals whatever their format (the store's SQL nonce_gt, which guards the
    claim's upsert; the ledger compares the same Decimal values in memory)."""
    from runnerd.store.connection import decimal_gt as gt

    assert gt("1693212345679", "1693212345678.123") and not gt("1693212345678.123", "1693212345679")
    assert gt("10", "9")
    assert gt("1693212345678123456", "1693212345678.123")
    assert not gt("007", "7") and not gt("7", "007")


# -- runnerd's own texts and nonce-less requests (SPEC §2) ---------------------------------------


def test_own_text_cannot_be_an_ocean_text():
    address = "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23"
    own = signing.own_text("computeLogs", [address, "ab" * 16])
    assert "".join(own).startswith("runnerd:computeLogs:0x")
    # every Ocean text begins with the address or a DID; this one with runnerd's prefix
    assert not "".join(own).startswith(("0x", "did:"))
    assert signing.own_text("computeStop", [address]) != signing.own_text("computeDelete", [address])


@pytest.mark.parametrize("stored, texts", [
    (None, ["1"]),
    ("0", ["1"]),
    ("41", ["42"]),
    ("1693212345678.123", ["1693212345679.123"]),
    # 19 digits: ocean.js computes Number(stored) + 1 in a double and prints it rounded
    ("1764300000123456789", ["1764300000123456790", "1764300000123456800"]),
])
def test_next_nonce_texts_are_what_clients_without_a_nonce_signed(stored, texts):
    assert signing.next_nonce_texts(stored) == texts


def test_verify_any_finds_the_signed_text():
    key = "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
    address = "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23"
    own = signing.own_text("computeStatus", [address, "j", ""])
    sig = signing.sign(key, own, "7")
    assert signing.verify_any(address, [[address, "j", ""], own], "7", sig) == own
    assert signing.verify_any(address, [[address, "j", ""]], "7", sig) is None


def test_own_signing_and_addresses_match_eth_account():
    """signing.sign / address_of / to_checksum_address use libsecp256k1 directly (the CLI must not
    pay for importing eth-account); they must give exactly eth-account's answers."""
    import secrets as _secrets

    from eth_account import Account
    from eth_account.messages import encode_defunct

    for _ in range(20):
        key = "0x" + _secrets.token_hex(32)
        parts, nonce = ["0xabc", _secrets.token_hex(8)], str(_secrets.randbelow(10**19))
        expected = Account.sign_message(encode_defunct(primitive=signing.message_hash(parts, nonce)),
                                        private_key=key).signature.hex()
        assert signing.sign(key, parts, nonce) == (expected if expected.startswith("0x") else "0x" + expected)
        assert signing.address_of(key) == Account.from_key(key).address
        assert signing.recover_signer(parts, nonce, signing.sign(key, parts, nonce)) == Account.from_key(key).address
    with pytest.raises(ValueError):
        signing.address_of("0x1234")
    with pytest.raises(ValueError):
        signing.address_of("0x" + "00" * 32)


def test_importing_signing_leaves_the_recursion_limit_to_whoever_serves_the_api(tmp_path):
    """signing.py is a pure library: importing it changes nothing in the process (#12). The API's
    creation is what bounds the limit a library may have raised (py_ecc sets 100000), so a deeply
    nested body stays a RecursionError (400) instead of a C stack overflow."""
    import subprocess
    import sys

    code = ("import sys; sys.setrecursionlimit(100000); import runnerd.signing, runnerd.client, runnerd.identity; "
            "imported = sys.getrecursionlimit(); from runnerd.api.app import MAX_RECURSION, create_app; "
            "from runnerd.config import parse_config; "
            "create_app(parse_config({'environments': [{'id': 'e'}]}), None, None, None, sys.argv[1]); "
            "print(imported, sys.getrecursionlimit() == MAX_RECURSION)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["100000", "True"]
