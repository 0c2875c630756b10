"""Signed provenance (#15 item 1), the pure part: canonical JSON, the statement, its signature as
Ocean wallets make and check them (checked here with eth-account alone), and `runnerd verify`
on a folder of results. The end-to-end run on real Docker is tests/test_provenance_docker.py."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils import keccak

from runnerd import provenance
from runnerd.cli import verify_cmd
from runnerd.provenance import AlgorithmFacts, Digest, InputDigest, JobFacts, ResultDigest

KEY = "0x" + "11" * 32
ADDRESS = Account.from_key(KEY).address
IMAGE_ID = "sha256:" + "ab" * 32


def _digest(data: bytes) -> Digest:
    return Digest(hashlib.sha256(data).hexdigest(), len(data))


def _statement(files: dict[str, bytes], code: bytes = b"print(1)\n") -> dict:
    results = [ResultDigest(i, name, "output" if not name.endswith(".log") else "algorithmLog", _digest(data))
               for i, (name, data) in enumerate(files.items())]
    job = JobFacts(job_id="a" * 32, owner="0x" + "22" * 20, environment="env", agreement_id="agr", status=70,
                   status_text="Job completed", date_created="1764300000.000001", date_finished="1764300010.5",
                   limits={"nanoCPUs": 1_000_000_000, "ramBytes": 2**31}, termination={"exitCode": 0},
                   timings_ms={"algorithm": 1234})
    algo = AlgorithmFacts(did=None, code_type="raw", code=_digest(code), entrypoint="python3 $ALGO",
                          image="python:3.12", image_id=IMAGE_ID, repo_digests=("python@sha256:" + "cd" * 32,))
    inputs = [InputDigest("did:op:x", 0, "local", _digest(b"data"))]
    return provenance.build_statement(job, algo, inputs, results, "0.test")


def test_canonical_json_is_sorted_compact_utf8_and_refuses_floats():
    assert provenance.canonical({"b": [1, "é"], "a": None, "c": True}) == '{"a":null,"b":[1,"é"],"c":true}'.encode()
    with pytest.raises(provenance.CanonicalError, match=r"\$.x\[0\]: floats"):
        provenance.canonical({"x": [1.5]})
    with pytest.raises(provenance.CanonicalError):
        provenance.canonical({1: "non-string key"})


def test_the_statement_is_in_toto_v1_with_the_results_as_subjects():
    st = _statement({"out.txt": b"hello"})
    assert st["_type"] == "https://in-toto.io/Statement/v1" and st["predicateType"] == provenance.PREDICATE_TYPE
    assert st["subject"] == [{"name": "out.txt", "digest": {"sha256": hashlib.sha256(b"hello").hexdigest()}}]
    pred = st["predicate"]
    assert pred["algorithm"]["image"]["id"] == IMAGE_ID
    assert pred["algorithm"]["code"]["sha256"] == hashlib.sha256(b"print(1)\n").hexdigest()
    assert pred["inputs"][0]["sha256"] == hashlib.sha256(b"data").hexdigest()
    provenance.canonical(st)  # no float anywhere


def test_the_signature_verifies_with_plain_eth_account():
    """What a consumer holding providerAddress does, with no runnerd code at all."""
    doc = provenance.sign_statement(_statement({"out.txt": b"hello"}), KEY, ADDRESS)
    canonical = json.dumps(doc["statement"], sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    h = keccak(canonical)
    assert doc["signatures"][0]["hash"] == "0x" + h.hex()
    signer = Account.recover_message(encode_defunct(primitive=h), signature=doc["signatures"][0]["sig"])
    assert signer == ADDRESS
    assert provenance.check_signature(doc, ADDRESS).ok


@pytest.mark.parametrize("tamper", [
    lambda st: st["subject"][0]["digest"].update(sha256="0" * 64),
    lambda st: st["predicate"]["algorithm"]["image"].update(id="sha256:" + "ef" * 32),
    lambda st: st["predicate"]["algorithm"]["code"].update(sha256="1" * 64),
    lambda st: st["predicate"]["job"].update(status=71),
], ids=["output", "image", "code", "status"])
def test_any_change_to_the_statement_fails_verification(tamper):
    doc = provenance.sign_statement(_statement({"out.txt": b"hello"}), KEY, ADDRESS)
    tamper(doc["statement"])
    h = keccak(provenance.canonical(doc["statement"]))
    assert Account.recover_message(encode_defunct(primitive=h), signature=doc["signatures"][0]["sig"]) != ADDRESS
    check = provenance.check_signature(doc, ADDRESS)
    assert not check.ok and any("changed after signing" in p for p in check.problems)


def test_a_signature_by_another_key_is_named():
    other = "0x" + "33" * 32
    doc = provenance.sign_statement(_statement({"o": b"x"}), other, Account.from_key(other).address)
    check = provenance.check_signature(doc, ADDRESS)
    assert not check.ok and check.problems == [f"signed by {Account.from_key(other).address}, not by the expected "
                                               f"provider {ADDRESS}"]


def _folder(tmp_path: Path, files: dict[str, bytes], code: bytes = b"print(1)\n") -> Path:
    folder = tmp_path / "results"
    folder.mkdir()
    doc = provenance.sign_statement(_statement(files, code), KEY, ADDRESS)
    for r, name in zip(provenance.listed_results(doc["statement"]), verify_cmd.saved_names(
            provenance.listed_results(doc["statement"]))):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(files[r["filename"]])
    (folder / "attestation-attestation.json").write_bytes(provenance.to_bytes(doc))
    return folder


def _verify(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "runnerd", "verify", *args], capture_output=True, text=True,
                          timeout=60)


def test_verify_passes_then_names_the_changed_output(tmp_path):
    files = {"out/a.txt": b"hello", "algorithm.log": b"log\n"}
    folder = _folder(tmp_path, files)
    ok = _verify(str(folder), "--provider", ADDRESS)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "verified: every result matches" in ok.stdout
    (folder / "out" / "a.txt").write_bytes(b"hellO")  # one byte
    bad = _verify(str(folder), "--provider", ADDRESS)
    assert bad.returncode == 1
    assert "MISMATCH result 0 (output out/a.txt): content differs" in bad.stdout
    assert "algorithmLog algorithm.log): ok" in bad.stdout  # the other result still checked


def test_verify_names_a_missing_result_a_foreign_signer_the_code_and_the_image(tmp_path):
    folder = _folder(tmp_path, {"a": b"1"})
    (folder / "a").unlink()
    mine = tmp_path / "algo.py"
    mine.write_bytes(b"print(2)\n")  # not the code that ran
    out = _verify(str(folder), "--provider", "0x" + "44" * 20, "--code", str(mine), "--image",
                  "sha256:" + "99" * 32, "--json")
    assert out.returncode == 1
    report = json.loads(out.stdout)
    text = "\n".join(report["problems"])
    assert "result 0 (output a): missing" in text
    assert "not by the expected provider" in text
    assert "algorithm code:" in text and "is not the code that ran" in text
    assert "image: sha256:" + "99" * 32 + " is not the image that ran" in text
    mine.write_bytes(b"print(1)\n")
    (folder / "a").write_bytes(b"1")
    good = _verify(str(folder), "--provider", ADDRESS, "--code", str(mine), "--image", IMAGE_ID)
    assert good.returncode == 0, good.stdout


def test_verify_of_a_folder_without_an_attestation_is_a_usage_error(tmp_path):
    out = _verify(str(tmp_path))
    assert out.returncode == 2 and "no attestation" in out.stderr


def test_provision_hashes_every_download_for_the_provenance(tmp_path):
    """With the plan's `hash`, a download without a checksum is hashed too, and named by its label."""
    from tests.test_steps import PROVISION, Server, ok, plan_for, run_step

    server = Server()
    try:
        server.route("/d", ok(b"payload"))
        dest = tmp_path / "data" / "inputs" / "x" / "0"
        plan = plan_for({"kind": "dataset", "label": "dataset did:op:x file 0", "url": server.base + "/d",
                         "sha256": None, "dest": str(dest)}, hash=True)
        rc, report, out = run_step(PROVISION, plan, tmp_path)
    finally:
        server.close()
    assert rc == 0, out
    assert report["files"] == [{"dest": str(dest), "bytes": 7, "sha256": hashlib.sha256(b"payload").hexdigest(),
                                "label": "dataset did:op:x file 0"}]
    assert "sha256 verified" not in out  # nothing was verified: there was no checksum to compare with


async def test_a_local_input_is_hashed_once_per_version_not_per_job(tmp_path):
    import asyncio
    import os

    from runnerd.engine.hashcache import HashCache

    data = tmp_path / "data.bin"
    data.write_bytes(os.urandom(3 * 1024 * 1024))
    cache = HashCache(tmp_path)
    pin = tmp_path / "pin"
    os.link(data, pin)  # a job's pin: a hard link (it changes the inode's ctime, not its key)
    first, second = await asyncio.gather(cache.digest(data), cache.digest(pin))
    assert first == second and first.sha256 == hashlib.sha256(data.read_bytes()).hexdigest()
    assert cache.hashed_bytes == data.stat().st_size  # two jobs, one hashing
    again = HashCache(tmp_path)  # a restarted daemon
    assert await again.digest(data) == first and again.hashed_bytes == 0
    with open(data, "r+b") as f:  # the file changes: its size stays, its mtime moves
        f.write(b"X")
    st = data.stat()  # (by a whole second: file times are coarser than a fast test)
    os.utime(data, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    changed = await again.digest(data)
    assert changed != first and again.hashed_bytes == data.stat().st_size


def test_verify_finds_results_saved_by_other_clients(tmp_path):
    """Plain file names (ocean.js saves them so) and outputs unpacked from ocean-node's outputs.tar."""
    files = {"out/a.txt": b"hello", "algorithm.log": b"log\n"}
    folder = _folder(tmp_path, files)
    (folder / "out" / "a.txt").rename(tmp_path / "a.txt")
    (folder / "outputs" / "out").mkdir(parents=True)
    (tmp_path / "a.txt").rename(folder / "outputs" / "out" / "a.txt")
    (folder / "algorithmLog-algorithm.log").rename(folder / "algorithm.log")
    ok = _verify(str(folder), "--provider", ADDRESS)
    assert ok.returncode == 0, ok.stdout + ok.stderr


def test_verify_prints_an_attestations_own_texts_escaped(tmp_path):
    """The attestation comes from the server: a keyid with a terminal escape must not reach the terminal."""
    folder = _folder(tmp_path, {"a": b"1"})
    path = folder / "attestation-attestation.json"
    doc = json.loads(path.read_text())
    doc["signatures"][0]["keyid"] = "0x\x1b[2Jevil"
    path.write_text(json.dumps(doc))
    out = _verify(str(folder))
    assert out.returncode == 1 and "\x1b" not in out.stdout and "\\x1b[2Jevil" in out.stdout
