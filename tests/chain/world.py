"""The world the chain tests share: ganache with Ocean's contracts, a runnerd daemon in chain mode
(a paid and a free environment), and datasets published on the chain and registered with
`runnerd assets add`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from runnerd.chain import fees
from runnerd.client import Client
from tests.chain import ocean as oc
from tests.helpers import Daemon, base_config, free_port, raw

PRICE = 0.5  # fee tokens per minute in the paid environment
CODE = "import os\nopen('/data/outputs/out.txt','w').write(str(sorted(os.listdir('/data/inputs'))))\n"


def on_chain(root: Path, assets: Path, nft: str, datatoken: str, timeout: int = 0) -> str:
    """A catalog dataset published on the test chain, registered as an operator does it."""
    data = root / f"{datatoken}.csv"
    data.write_text("a,b\n1,2\n")
    data.chmod(0o644)
    proc = subprocess.run([sys.executable, "-m", "runnerd", "assets", "add", str(data), "--assets", str(assets),
                           "--copy", "--allow-raw-algorithm", "--nft-address", nft, "--datatoken", datatoken,
                           "--chain-id", str(oc.CHAIN_ID), "--timeout", str(timeout)],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "RUNNERD_CONFIG": "/nonexistent"})
    assert proc.returncode == 0, proc.stderr
    assert "paid with orders on chain 8996" in proc.stderr
    return proc.stdout.strip()


class World:
    def __init__(self, root: Path):
        self.chain = oc.Ganache(root / "chain", free_port()).start()
        self.daemon: Daemon | None = None
        try:
            self._build(root)
        except BaseException:  # nothing may outlive a failed set-up: the node, the daemon
            self.close()
            raise

    def _build(self, root: Path) -> None:
        self.ocean = oc.Ocean(self.chain)
        config = base_config(startsPerMinutePerOwner=0, maxJobsPerOwner=50, chains=[
            {"chainId": oc.CHAIN_ID, "rpcUrl": self.chain.url, "feeToken": self.ocean.ocean, "rpcTimeout": 5}])
        config["environments"] = [
            {"id": "paid", "nCPU": 1, "ramGB": 0.5, "diskGB": 0.1, "maxJobs": 2, "maxJobDuration": 60,
             "priceMin": PRICE, "rawAlgorithmImages": base_config()["environments"][0]["rawAlgorithmImages"]},
            {"id": "free", "nCPU": 1, "ramGB": 0.5, "diskGB": 0.1, "maxJobs": 2, "maxJobDuration": 60,
             "rawAlgorithmImages": base_config()["environments"][0]["rawAlgorithmImages"]}]
        self.daemon = Daemon(root / "daemon", config)
        self.daemon.start()
        self.node = self.daemon.client().info()["providerAddress"]
        self.node_key = (self.daemon.data_dir / "node.key").read_text().strip()
        self.nft, self.dt = self.ocean.publish("data-a")
        self.did = on_chain(root, self.daemon.assets, self.nft, self.dt)
        self.nft_b, self.dt_b = self.ocean.publish("data-b")
        self.did_b = on_chain(root, self.daemon.assets, self.nft_b, self.dt_b)
        self.nft_t, self.dt_t = self.ocean.publish("data-timeout")
        self.did_t = on_chain(root, self.daemon.assets, self.nft_t, self.dt_t, timeout=2)

    def client(self, role: str = "consumer") -> Client:
        return Client(self.daemon.url, oc.KEYS[role])

    def initialize(self, did: str, env: str = "paid", seconds: int = 600, tx: str | None = None,
                   consumer: str = "consumer") -> httpx.Response:
        item: dict[str, Any] = {"documentId": did, "serviceId": "compute"}
        if tx:
            item["transferTxId"] = tx
        return httpx.post(f"{self.daemon.url}/api/services/initializeCompute", json={
            "datasets": [item], "algorithm": raw(CODE),
            "compute": {"env": env, "validUntil": int(time.time()) + seconds},
            "consumerAddress": oc.ADDRESSES[consumer]}, timeout=30)

    def order(self, did: str = "", datatoken: str = "", env: str = "paid", payer: str = "consumer",
              seconds: int = 600) -> str:
        """initializeCompute, then approve + startOrder with the fee it quoted (consumer = the
        environment's consumerAddress, the node, as ocean.py orders). Returns the order's tx."""
        answer = self.initialize(did or self.did, env, seconds)
        assert answer.status_code == 200, answer.text
        fee = answer.json()["datasets"][0]["providerFee"]
        receipt = self.ocean.start_order(payer, datatoken or self.dt, fee, consumer=self.node)
        return receipt["transactionHash"]

    def signed_fee(self, datatoken: str, *, env: str = "paid", amount: int | None = None,
                   valid_until: int | None = None, stamp: float | None = None, key: str | None = None,
                   address: str | None = None) -> dict[str, Any]:
        """A providerFee signed here (with the node key unless told otherwise): for the orders
        runnerd itself would never quote (underpaid, expired), which the contract still accepts."""
        valid_until = valid_until if valid_until is not None else int(time.time()) + 600
        data = fees.provider_data(env, stamp if stamp is not None else time.time(), datatoken, "compute")
        if amount is None:
            amount = fees.fee_amount(PRICE, valid_until, time.time(), 18, self.ocean.ocean)
        return fees.sign_fee(key or self.node_key, address or self.node, self.ocean.ocean, amount, valid_until, data)

    def start(self, tx: str, did: str = "", env: str = "paid", role: str = "consumer") -> dict[str, Any]:
        return self.client(role).start(did or self.did, raw(CODE), env, transfer_tx=tx)

    def close(self) -> None:
        if self.daemon is not None:
            self.daemon.stop()
            left = self.daemon.leftover_containers()  # a test that failed midway may leave a job running
            if left:
                subprocess.run(["docker", "rm", "-f", *left], capture_output=True)
            self.daemon.purge()
        self.chain.stop()
