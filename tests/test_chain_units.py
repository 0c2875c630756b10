"""Chain mode's pure parts (#16), in process: fee arithmetic, the fee signature checked against
eth-account (an independent implementation), the JSON-RPC client's failure modes, the `chains`
config and the DDO fields. The real contracts check the same signature in tests/test_chain.py."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct

from runnerd.catalog import AssetError, _validate
from runnerd.chain import fees
from runnerd.chain.gate import ChainGate, Ordered
from runnerd.chain.orders import OrderTarget
from runnerd.chain.rpc import ChainUnavailable, Rpc
from runnerd.config import ConfigError, parse_config
from runnerd.errors import PolicyRejected, Unavailable

TOKEN = "0x" + "ab" * 20
KEY = "0x" + "11" * 32
ADDRESS = Account.from_key(KEY).address


def test_fee_amount_is_price_per_minute_until_valid_until_in_token_units():
    now = 1_700_000_000
    assert fees.fee_amount(0.5, now + 600, now, 18, TOKEN) == 5 * 10**18
    assert fees.fee_amount(2, now + 90, now, 6, TOKEN) == 3 * 10**6
    assert fees.fee_amount(1, now + 1, now, 0, TOKEN) == 0  # rounded down
    assert fees.fee_amount(1, now - 60, now, 18, TOKEN) == 0  # a past validUntil costs nothing
    assert fees.fee_amount(1, now + 600, now, 18, fees.ZERO_ADDRESS) == 0  # no fee token: no fee
    assert fees.fee_amount(0, now + 600, now, 18, TOKEN) == 0


def test_the_fee_signature_is_the_eip191_signature_of_the_packed_fields():
    data = fees.provider_data("paid", 1700000000.5, "0x" + "cd" * 20, "compute")
    assert data == b'{"environment":"paid","timestamp":1700000000.5,"dt":"0x' + b"cd" * 20 + b'","id":"compute"}'
    fee = fees.sign_fee(KEY, ADDRESS, TOKEN, 12345, 1800000000, data)
    packed = data + bytes.fromhex(ADDRESS[2:]) + bytes.fromhex(TOKEN[2:]) + (12345).to_bytes(32, "big") + \
        (1800000000).to_bytes(32, "big")
    from eth_hash.auto import keccak

    message = encode_defunct(primitive=keccak(packed))  # what _checkProviderFee ecrecovers
    vrs = (fee["v"], int(fee["r"], 16), int(fee["s"], 16))
    assert Account.recover_message(message, vrs=vrs) == ADDRESS
    assert fee["v"] in (27, 28) and fee["providerFeeAmount"] == "12345" and fee["providerData"] == "0x" + data.hex()
    r, s = bytes.fromhex(fee["r"][2:]), bytes.fromhex(fee["s"][2:])
    assert fees.fee_signer(data, ADDRESS, TOKEN, 12345, 1800000000, fee["v"], r, s) == ADDRESS.lower()
    # any field changed after signing names another signer (the contract then reverts)
    assert fees.fee_signer(data, ADDRESS, TOKEN, 12344, 1800000000, fee["v"], r, s) != ADDRESS.lower()
    assert fees.fee_signer(data, ADDRESS, TOKEN, 12345, 1800000001, fee["v"], r, s) != ADDRESS.lower()
    assert fees.fee_signer(data, ADDRESS, TOKEN, 12345, 1800000000, 29, r, s) is None


# -- the JSON-RPC client -------------------------------------------------------------------------


def _answer(body: bytes):
    return lambda url, data, timeout: body


@pytest.mark.parametrize("transport", [
    _answer(b"<html>502 Bad Gateway</html>"),
    _answer(b"[1, 2]"),
    _answer(json.dumps({"jsonrpc": "2.0", "id": 1, "error": {"code": -32000, "message": "boom"}}).encode()),
])
def test_an_unusable_answer_is_chain_unavailable(transport):
    with pytest.raises(ChainUnavailable):
        Rpc("http://127.0.0.1:1", 1, transport).call("eth_blockNumber", [])


def test_a_node_that_never_answers_costs_one_timeout():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)  # accepts the connection (the kernel does), never answers
        rpc = Rpc(f"http://127.0.0.1:{server.getsockname()[1]}", 0.5)
        started = time.monotonic()
        with pytest.raises(ChainUnavailable):
            rpc.call("eth_blockNumber", [])
        assert time.monotonic() - started < 5


def test_a_refused_connection_and_a_spent_deadline_are_chain_unavailable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens once closed
    with pytest.raises(ChainUnavailable):
        Rpc(f"http://127.0.0.1:{port}", 1).call("eth_blockNumber", [])
    with pytest.raises(ChainUnavailable):
        Rpc("http://127.0.0.1:1", 1, _answer(b"{}")).call("eth_blockNumber", [], deadline=time.monotonic() - 1)


def _settings(**chain):
    return parse_config({"environments": [{"id": "paid", "priceMin": 1}], "chains": [
        {"chainId": 8996, "rpcUrl": "http://127.0.0.1:1", "feeToken": TOKEN, "rpcTimeout": 0.2, **chain}]})


PART = Ordered("dataset", 8996, OrderTarget("0x" + "01" * 20, "0x" + "02" * 20, "compute", 0, 0), "0x" + "aa" * 32)


def test_an_outage_during_a_check_is_a_503_in_bounded_time():
    def slow(url, body, timeout):
        time.sleep(timeout)
        raise TimeoutError("timed out")

    settings = _settings()
    gate = ChainGate(settings, ADDRESS, KEY, slow)
    started = time.monotonic()
    with pytest.raises(Unavailable) as err:
        asyncio.run(gate.check_start([PART], ADDRESS, settings.environment("paid"), lambda key: False))
    assert err.value.code == "chain_unavailable" and err.value.http_status == 503
    assert "127.0.0.1" not in err.value.message  # the consumer is not told the operator's RPC URL
    assert time.monotonic() - started < 3 * 0.2 + 2


def test_an_asset_on_a_chain_without_chain_mode_is_refused():
    settings = _settings()
    part = Ordered("datasets[1]", 1, PART.target, PART.tx)
    with pytest.raises(PolicyRejected) as err:
        asyncio.run(ChainGate(settings, ADDRESS, KEY).check_start([part], ADDRESS, settings.environment("paid"),
                                                                  lambda key: False))
    assert (err.value.code, err.value.field) == ("order_invalid", "datasets[1].serviceId")


def test_a_used_order_is_refused_before_the_node_is_asked():
    def never(url, body, timeout):
        raise AssertionError("asked the node")

    settings = _settings()
    algo = Ordered("algorithm", 8996, PART.target, PART.tx)
    with pytest.raises(PolicyRejected) as err:
        asyncio.run(ChainGate(settings, ADDRESS, KEY, never).check_start(
            [algo], ADDRESS, settings.environment("paid"), lambda key: key == algo.key))
    assert (err.value.code, err.value.field) == ("in_use_or_not_on_chain", "algorithm")


# -- configuration -------------------------------------------------------------------------------


def test_a_priced_environment_needs_chain_mode():
    with pytest.raises(ConfigError, match=r"environments\[0\]\.priceMin: is above 0"):
        parse_config({"environments": [{"id": "paid", "priceMin": 0.1}]})
    with pytest.raises(ConfigError, match=r"environments\[0\]\.priceMin: is above 0"):  # a fee of 0 charges nothing
        _settings(feeToken="0x" + "0" * 40)
    assert parse_config({"environments": [{"id": "free"}]}).chains == ()  # free runs as before
    assert _settings().chain(8996).confirmations == 1


@pytest.mark.parametrize("chain, message", [
    ({"chainId": 1}, r"chains\[0\]\.chainId: must be one of chainIds"),
    ({"rpcUrl": "ws://127.0.0.1:8546"}, r"chains\[0\]\.rpcUrl"),
    ({"rpcUrl": "https://user:secret@rpc.example"}, r"chains\[0\]\.rpcUrl"),
    ({"feeToken": "0x12"}, r"chains\[0\]\.feeToken"),
    ({"confirmations": 0}, r"chains\[0\]\.confirmations"),
    ({"wallet": "0x"}, r"chains\[0\]\.wallet: unknown key"),
])
def test_a_bad_chains_entry_is_refused_with_its_path(chain, message):
    with pytest.raises(ConfigError, match=message):
        _settings(**chain)


# -- DDO fields ----------------------------------------------------------------------------------

DID = "did:op:" + "0" * 64


def _ddo(**top):
    service = {"id": "compute", "type": "compute", "files": []}
    service.update(top.pop("service", {}))
    return {"id": DID, "metadata": {"type": "dataset"}, "services": [service], **top}


@pytest.mark.parametrize("ddo, message", [
    (_ddo(nftAddress="0x12", chainId=8996), "nftAddress must be a 0x address"),
    (_ddo(nftAddress="0x" + "1" * 40, service={"datatokenAddress": "0x" + "2" * 40}), "needs the chainId"),
    (_ddo(nftAddress="0x" + "1" * 40, chainId=8996), "has no datatokenAddress"),
    (_ddo(service={"datatokenAddress": "0x" + "2" * 40}), "has no nftAddress"),
    (_ddo(chainId="8996"), "chainId must be a positive integer"),
    (_ddo(service={"timeout": -1}), "timeout must be a whole number"),
    (_ddo(service={"timeout": "60"}), "timeout must be a whole number"),
])
def test_chain_fields_of_a_ddo_are_validated(ddo, message):
    with pytest.raises(AssetError, match=message):
        _validate(ddo, "x.json")


def test_a_published_ddo_is_accepted():
    ddo = _ddo(nftAddress="0x" + "1" * 40, chainId=8996, service={"datatokenAddress": "0x" + "2" * 40,
                                                                  "timeout": 3600})
    assert _validate(ddo, "x.json") == DID


def test_an_answer_not_shaped_as_the_abi_says_is_a_503_not_a_500():
    """eth_call on an address with no contract answers "0x": decoding it is an unusable answer
    (eth_abi's DecodingError is no ValueError; it once escaped as a 500)."""
    empty = _answer(json.dumps({"jsonrpc": "2.0", "id": 1, "result": "0x"}).encode())
    settings = _settings()
    gate = ChainGate(settings, ADDRESS, KEY, empty)
    with pytest.raises(Unavailable) as err:
        asyncio.run(gate.decimals(settings.chain(8996)))
    assert err.value.code == "chain_unavailable"
