"""A local Ethereum node (ganache from tests/chain/node_modules, on 127.0.0.1 only) with Ocean's
own contracts deployed from the @oceanprotocol/contracts artifacts: ERC721Factory, the ERC721
and ERC20 templates, FactoryRouter, an OPF fee collector and OceanToken as the fee token.

Transactions are sent with eth_sendTransaction from ganache's own unlocked accounts (keys chosen
here, so the same accounts can also sign runnerd requests); calls are encoded with eth_abi from
the artifacts' ABIs, so nothing here restates a contract's interface by hand.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_abi import decode, encode
from eth_account import Account
from eth_hash.auto import keccak

HERE = Path(__file__).resolve().parent
GANACHE = HERE / "node_modules" / "ganache" / "dist" / "node" / "cli.js"
ARTIFACTS = HERE / "node_modules" / "@oceanprotocol" / "contracts" / "artifacts" / "contracts"
CHAIN_ID = 8996  # barge's chain id: what Ocean's clients call the development chain
DEAD = "0x000000000000000000000000000000000000dEaD"
ZERO = "0x" + "0" * 40
ETHER = 10**18


def available() -> bool:
    return GANACHE.exists() and ARTIFACTS.exists() and shutil.which("node") is not None


def key(name: str) -> str:
    return "0x" + keccak(f"runnerd test chain {name}".encode()).hex()


ROLES = ("deployer", "publisher", "consumer", "stranger", "other_provider")
KEYS = {role: key(role) for role in ROLES}
ADDRESSES = {role: Account.from_key(k).address for role, k in KEYS.items()}


def _type(item: dict[str, Any]) -> str:
    if item["type"].startswith("tuple"):
        return "(" + ",".join(_type(c) for c in item["components"]) + ")" + item["type"][5:]
    return item["type"]


class Contract:
    def __init__(self, name: str):
        path = next(ARTIFACTS.rglob(f"{name}.json"))
        artifact = json.loads(path.read_text())
        self.abi = artifact["abi"]
        self.bytecode = artifact["bytecode"]

    def _entry(self, kind: str, name: str | None = None) -> dict[str, Any]:
        return next(e for e in self.abi if e["type"] == kind and (name is None or e.get("name") == name))

    def calldata(self, name: str, *args: Any) -> str:
        fn = self._entry("function", name)
        types = [_type(i) for i in fn["inputs"]]
        sig = f"{name}({','.join(types)})"
        return "0x" + (keccak(sig.encode())[:4] + encode(types, list(args))).hex()

    def constructor(self, *args: Any) -> str:
        try:
            types = [_type(i) for i in self._entry("constructor")["inputs"]]
        except StopIteration:
            types = []
        return self.bytecode + encode(types, list(args)).hex()

    def outputs(self, name: str, result: str) -> tuple[Any, ...]:
        types = [_type(o) for o in self._entry("function", name)["outputs"]]
        return tuple(decode(types, bytes.fromhex(result[2:])))

    def events(self, receipt: dict[str, Any], name: str) -> list[dict[str, Any]]:
        event = self._entry("event", name)
        sig = f"{name}({','.join(_type(i) for i in event['inputs'])})"
        topic = "0x" + keccak(sig.encode()).hex()
        out = []
        for log in receipt["logs"]:
            if log["topics"] and log["topics"][0] == topic:
                plain = [i for i in event["inputs"] if not i["indexed"]]
                values = dict(zip([i["name"] for i in plain],
                                  decode([_type(i) for i in plain], bytes.fromhex(log["data"][2:]))))
                for i, item in enumerate(i for i in event["inputs"] if i["indexed"]):
                    values[item["name"]] = "0x" + log["topics"][i + 1][-40:] if item["type"] == "address" else \
                        log["topics"][i + 1]
                values["_address"] = log["address"]
                out.append(values)
        return out


class Reverted(Exception):
    def __init__(self, receipt: dict[str, Any]):
        super().__init__(f"reverted: {receipt['transactionHash']}")
        self.receipt = receipt


@dataclass
class Ganache:
    root: Path
    port: int
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "Ganache":
        self.root.mkdir(parents=True, exist_ok=True)
        argv = ["node", str(GANACHE), "--server.host", "127.0.0.1", "--server.port", str(self.port),
                "--chain.chainId", str(CHAIN_ID), "--logging.quiet",
                "--miner.blockGasLimit", "0x3b9aca00", "--chain.allowUnlimitedContractSize"]
        for k in KEYS.values():
            argv += ["--wallet.accounts", f"{k},{1000 * ETHER}"]
        log = open(self.root / "ganache.log", "ab")
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ganache exited: {(self.root / 'ganache.log').read_text()[-2000:]}")
            try:
                if self.rpc("eth_chainId", []) == hex(CHAIN_ID):
                    return self
            except OSError:
                time.sleep(0.2)
        raise TimeoutError("ganache did not answer in 60 s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def rpc(self, method: str, params: list[Any]) -> Any:
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
        request = urllib.request.Request(self.url, body, {"Content-Type": "application/json"})
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(request, timeout=30) as response:
            answer = json.loads(response.read())
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return answer["result"]

    def send(self, sender: str, to: str | None, data: str, check: bool = True) -> dict[str, Any]:
        tx = {"from": ADDRESSES.get(sender, sender), "data": data, "gas": hex(15_000_000)}
        if to:
            tx["to"] = to
        tx_hash = self.rpc("eth_sendTransaction", [tx])
        receipt = None
        for _ in range(100):
            receipt = self.rpc("eth_getTransactionReceipt", [tx_hash])
            if receipt:
                break
            time.sleep(0.05)
        assert receipt, f"no receipt for {tx_hash}"
        if check and int(receipt["status"], 16) != 1:
            raise Reverted(receipt)
        return receipt

    def call(self, to: str, data: str) -> str:
        return self.rpc("eth_call", [{"to": to, "data": data}, "latest"])

    def block_time(self) -> int:
        return int(self.rpc("eth_getBlockByNumber", ["latest", False])["timestamp"], 16)


class Ocean:
    """Ocean's contracts on a Ganache, and the few transactions a publisher and a consumer make."""

    def __init__(self, chain: Ganache):
        self.chain = chain
        self.erc20 = Contract("ERC20Template")
        self.erc721 = Contract("ERC721Template")
        self.factory_c = Contract("ERC721Factory")
        self.token_c = Contract("OceanToken")
        c = chain
        self.ocean = self._deploy(self.token_c, ADDRESSES["deployer"])
        opf = self._deploy(Contract("OPFCommunityFeeCollector"), ADDRESSES["deployer"], ADDRESSES["deployer"])
        router_c = Contract("FactoryRouter")
        self.router = self._deploy(router_c, ADDRESSES["deployer"], self.ocean, DEAD, opf, [])
        template20 = self._deploy(self.erc20)
        template721 = self._deploy(self.erc721)
        self.factory = self._deploy(self.factory_c, template721, template20, self.router)
        c.send("deployer", self.router, router_c.calldata("addFactory", self.factory))
        for role in ("consumer", "stranger"):
            c.send("deployer", self.ocean, self.token_c.calldata("mint", ADDRESSES[role], 10_000 * ETHER))

    def _deploy(self, contract: Contract, *args: Any) -> str:
        receipt = self.chain.send("deployer", None, contract.constructor(*args))
        return receipt["contractAddress"]

    def publish(self, name: str = "runnerd-data") -> tuple[str, str]:
        """A data NFT with one datatoken (ERC20Template, index 1), minted 100 to the consumer and
        the stranger. Returns (nft address, datatoken address)."""
        publisher = ADDRESSES["publisher"]
        data = self.factory_c.calldata(
            "createNftWithErc20",
            (name, name.upper()[:8], 1, "https://example.invalid/nft", True, publisher),
            (1, [name + "-dt", "DT"], [publisher, publisher, ZERO, ZERO], [1_000_000 * ETHER, 0], []))
        receipt = self.chain.send("publisher", self.factory, data)
        nft = self.factory_c.events(receipt, "NFTCreated")[0]["newTokenAddress"]
        datatoken = self.factory_c.events(receipt, "TokenCreated")[0]["newTokenAddress"]
        for role in ("consumer", "stranger"):
            self.chain.send("publisher", datatoken, self.erc20.calldata("mint", ADDRESSES[role], 100 * ETHER))
        return nft.lower(), datatoken.lower()

    def start_order(self, payer: str, datatoken: str, fee: dict[str, Any], consumer: str | None = None,
                    service_index: int = 0, check: bool = True) -> dict[str, Any]:
        """approve(the fee) then startOrder, as ocean.py's OrderMixin does; `fee` is a providerFee
        object as initializeCompute answers it. Returns the startOrder receipt."""
        self._approve_fee(payer, datatoken, fee)
        data = self.erc20.calldata("startOrder", consumer or ADDRESSES[payer], service_index, _fee_tuple(fee),
                                   (ZERO, ZERO, 0))
        return self.chain.send(payer, datatoken, data, check=check)

    def reuse_order(self, payer: str, datatoken: str, order_tx: str, fee: dict[str, Any]) -> dict[str, Any]:
        self._approve_fee(payer, datatoken, fee)
        data = self.erc20.calldata("reuseOrder", bytes.fromhex(order_tx[2:]), _fee_tuple(fee))
        return self.chain.send(payer, datatoken, data)

    def _approve_fee(self, payer: str, datatoken: str, fee: dict[str, Any]) -> None:
        amount = int(fee["providerFeeAmount"])
        if amount:
            self.chain.send(payer, fee["providerFeeToken"], self.token_c.calldata("approve", datatoken, amount))

    def balance(self, token: str, who: str) -> int:
        return self.token_c.outputs("balanceOf", self.chain.call(token, self.token_c.calldata("balanceOf", who)))[0]


def _fee_tuple(fee: dict[str, Any]) -> tuple[Any, ...]:
    return (fee["providerFeeAddress"], fee["providerFeeToken"], int(fee["providerFeeAmount"]), int(fee["v"]),
            bytes.fromhex(fee["r"][2:]), bytes.fromhex(fee["s"][2:]), int(fee["validUntil"]),
            bytes.fromhex(fee["providerData"][2:]))


def require_chain() -> bool:
    """RUNNERD_REQUIRE_CHAIN=1 (set by .ci/run): a missing test chain fails instead of skipping."""
    return os.environ.get("RUNNERD_REQUIRE_CHAIN") == "1"
