"""Signed provenance end to end (#15 item 1), on real Docker: a finished job publishes an
attestation that verifies with plain eth-account against the node's providerAddress, names the
image Docker ran, the code and the inputs by their sha256, and stops verifying (and `runnerd
verify` says what) once a byte of an output, the image or the code is changed."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import httpx
import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils import keccak

from runnerd.cli.results_cmd import download
from tests.helpers import BUSYBOX_IMAGE, PY_IMAGE, dataset, raw, wait_done

pytestmark = pytest.mark.docker

DATA = b"a,b\n1,2\n3,4\n"
CODE = """
import json, os
dids = json.loads(os.environ["DIDS"])
rows = open(f"/data/inputs/{dids[0]}/0").read().splitlines()
os.makedirs("/data/outputs/nested", exist_ok=True)
open("/data/outputs/nested/rows.txt", "w").write(str(len(rows)))
json.dump({"header": rows[0]}, open("/data/outputs/summary.json", "w"))
print("done")
"""


def _image_id(ref: str) -> str:
    return subprocess.run(["docker", "image", "inspect", "-f", "{{.Id}}", ref], capture_output=True, text=True,
                          check=True).stdout.strip()


def _verify(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "runnerd", "verify", *args], capture_output=True, text=True,
                          timeout=60)


def test_an_attestation_verifies_with_eth_account_and_fails_once_anything_changes(shared_daemon, tmp_path):
    did = dataset(shared_daemon.assets, DATA)
    client = shared_daemon.client()
    job = wait_done(client, client.start(did, raw(CODE), "ocean-compute")["jobId"])
    assert job["status"] == 70, job
    last = job["results"][-1]
    assert last["type"] == "attestation" and last["filename"] == "attestation.json"
    folder = tmp_path / "res"
    download(client, job, folder, quiet=True)
    doc = json.loads((folder / "attestation-attestation.json").read_text())

    # 1. plain eth-account, against the providerAddress the node publishes
    provider = httpx.get(shared_daemon.url + "/").json()["providerAddress"]
    canonical = json.dumps(doc["statement"], sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    signer = Account.recover_message(encode_defunct(primitive=keccak(canonical)), signature=doc["signatures"][0]["sig"])
    assert signer == provider

    # 2. what it says is what ran
    pred = doc["statement"]["predicate"]
    assert pred["job"]["jobId"] == job["jobId"] and pred["job"]["status"] == 70 and pred["job"]["owner"] == job["owner"]
    assert pred["algorithm"]["image"]["id"] == _image_id(PY_IMAGE)
    assert pred["algorithm"]["code"]["sha256"] == hashlib.sha256(CODE.encode()).hexdigest()
    assert pred["inputs"] == [{"did": did, "index": 0, "source": "local", "sha256": hashlib.sha256(DATA).hexdigest(),
                               "size": len(DATA)}]
    listed = {r["filename"]: r for r in pred["results"]}
    assert listed["nested/rows.txt"]["sha256"] == hashlib.sha256(b"3").hexdigest()
    assert set(listed) == {r["filename"] for r in job["results"][:-1]}  # every result but itself
    assert pred["job"]["limits"]["ramBytes"] == int(0.5 * 1024**3) and pred["job"]["timingsMs"]["algorithm"] >= 0
    assert "/" not in json.dumps(pred["inputs"]).replace("did:op:", "")  # labels, never a host path

    code = tmp_path / "algo.py"
    code.write_text(CODE)
    ok = _verify(str(folder), "--url", shared_daemon.url, "--code", str(code), "--image", _image_id(PY_IMAGE))
    assert ok.returncode == 0, ok.stdout + ok.stderr

    # 3. one byte of an output
    target = folder / "nested" / "rows.txt"
    target.write_bytes(b"4")
    bad = _verify(str(folder), "--url", shared_daemon.url)
    assert bad.returncode == 1 and "MISMATCH result" in bad.stdout and "(output nested/rows.txt): content differs" \
        in bad.stdout
    target.write_bytes(b"3")

    # 4. the image and the code: not what ran
    changed = tmp_path / "algo2.py"
    changed.write_text(CODE + "#")
    other = _verify(str(folder), "--url", shared_daemon.url, "--image", _image_id(BUSYBOX_IMAGE), "--code",
                    str(changed))
    assert other.returncode == 1
    assert "MISMATCH image:" in other.stdout and "MISMATCH algorithm code:" in other.stdout

    # 5. the statement edited to claim another image: the signature no longer holds
    doc["statement"]["predicate"]["algorithm"]["image"]["id"] = _image_id(BUSYBOX_IMAGE)
    (folder / "attestation-attestation.json").write_text(json.dumps(doc))
    canonical = json.dumps(doc["statement"], sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert Account.recover_message(encode_defunct(primitive=keccak(canonical)),
                                   signature=doc["signatures"][0]["sig"]) != provider
    forged = _verify(str(folder), "--provider", provider)
    assert forged.returncode == 1 and "changed after signing" in forged.stdout


def test_a_job_that_never_ran_its_algorithm_has_no_attestation(shared_daemon):
    did = dataset(shared_daemon.assets, DATA)
    client = shared_daemon.client()
    job = wait_done(client, client.start(did, raw("print(1)", image="runnerd-test-missing:none"),
                                         "ocean-compute")["jobId"])
    assert job["status"] == 32 and all(r["type"] != "attestation" for r in job["results"])


def test_provenance_off_publishes_none(make_daemon):
    daemon = make_daemon(provenance=False)
    did = dataset(daemon.assets, DATA)
    client = daemon.client()
    job = wait_done(client, client.start(did, raw("print(1)"), "ocean-compute")["jobId"])
    assert job["status"] == 70 and all(r["type"] != "attestation" for r in job["results"])
