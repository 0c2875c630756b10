"""The egress guard (#15 item 3): the DDO option, the filter's hashing and its verdicts (the
script run as the helper container runs it), and, on real Docker, a job whose output is a
verbatim copy of a guarded input ending at 74 with its logs and without its outputs."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from runnerd import egress
from runnerd.provenance import Digest

FILTER = Path(__file__).resolve().parent.parent / "runnerd" / "steps" / "filter.py"


def run_filter(tmp_path: Path, **plan_extra) -> tuple[int, dict, str]:
    plan = {"src": str(tmp_path / "src"), "dest": str(tmp_path / "out" / "outputs"), "maxFiles": 100,
            "maxBytes": 100 * 1024 * 1024, "report": str(tmp_path / "out" / "report.json"), **plan_extra}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    proc = subprocess.run([sys.executable, str(FILTER), str(tmp_path / "plan.json")], capture_output=True, text=True,
                          timeout=60)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, json.loads(Path(plan["report"]).read_text()), proc.stdout


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_the_filter_hashes_what_it_copies_holes_included(tmp_path):
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "a.txt").write_bytes(b"hello")
    with open(src / "sparse", "wb") as f:
        f.write(b"x")
        f.seek(3 * 1024 * 1024 + 5)
        f.write(b"y")
        f.truncate(5 * 1024 * 1024)
    rc, report, out = run_filter(tmp_path, hash=True)
    assert rc == 0, out
    sparse = (src / "sparse").read_bytes()
    assert report["files"] == [{"path": "d/a.txt", "size": 5, "sha256": sha(b"hello")},
                               {"path": "sparse", "size": len(sparse), "sha256": sha(sparse)}]
    assert sha((tmp_path / "out" / "outputs" / "sparse").read_bytes()) == sha(sparse)


def test_without_hash_the_report_is_as_before(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a").write_bytes(b"1")
    rc, report, _ = run_filter(tmp_path)
    assert rc == 0 and report["files"] == [{"path": "a", "size": 1}]


def test_a_verbatim_copy_of_a_guarded_input_withholds_every_output(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "summary.txt").write_bytes(b"mean=3")
    (src / "leak.csv").write_bytes(b"secret,rows\n1,2\n")
    guard = {"inputs": {sha(b"secret,rows\n1,2\n"): "dataset did:op:abc file 0"}, "budgets": []}
    rc, report, out = run_filter(tmp_path, guard=guard)
    assert rc == 3
    assert report == {"ok": False, "reason": "limits", "guard": True, "error":
                      "output leak.csv is a verbatim copy of dataset did:op:abc file 0, which its egress guard "
                      "forbids to publish"}
    assert list((tmp_path / "out" / "outputs").iterdir()) == []  # nothing published, not even summary.txt
    assert "nothing is published" in out


def test_an_empty_output_is_never_called_a_copy(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "empty").write_bytes(b"")
    rc, report, _ = run_filter(tmp_path, guard={"inputs": {sha(b""): "dataset d file 0"}, "budgets": []})
    assert rc == 0 and report["files"][0]["path"] == "empty"


def test_outputs_over_a_guarded_budget_are_withheld(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a").write_bytes(b"x" * 600)
    (tmp_path / "src" / "b").write_bytes(b"x" * 600)
    guard = {"inputs": {}, "budgets": [{"label": "dataset did:op:big", "maxBytes": 5000},
                                       {"label": "dataset did:op:small", "maxBytes": 1000}]}
    rc, report, _ = run_filter(tmp_path, guard=guard)
    assert rc == 3 and report["guard"] is True
    assert report["error"] == "outputs exceed the egress guard of dataset did:op:small (at most 1000 bytes of outputs)"
    assert list((tmp_path / "out" / "outputs").iterdir()) == []


def test_the_ddo_option_parses_and_refuses_what_it_does_not_know():
    assert egress.parse({}) is None
    assert egress.parse({"egressGuard": {"noVerbatimCopies": False}}) is None  # sets nothing
    assert egress.parse({"egressGuard": {"noVerbatimCopies": True, "maxOutputRatio": 0.5}}) == \
        egress.EgressGuard(True, 0.5)
    for bad, why in [({"noVerbatimCopy": True}, "noVerbatimCopy is not a known option"),
                     ({"noVerbatimCopies": "yes"}, "true or false"), ({"maxOutputRatio": -1}, ">= 0"),
                     ({"maxOutputRatio": True}, ">= 0"), ("on", "must be an object")]:
        with pytest.raises(ValueError, match=why):
            egress.parse({"egressGuard": bad})


def test_the_filter_guard_labels_inputs_and_budgets_each_dataset():
    a, b = Digest(sha(b"a"), 1000), Digest(sha(b"b"), 3000)
    plan = egress.filter_guard([
        egress.GuardedInput("did:op:1", egress.EgressGuard(True, 0.1), (a, b)),
        egress.GuardedInput("did:op:2", None, (Digest(sha(b"free"), 4),)),
    ])
    assert plan == {"inputs": {sha(b"a"): "dataset did:op:1 file 0", sha(b"b"): "dataset did:op:1 file 1"},
                    "budgets": [{"label": "dataset did:op:1", "maxBytes": 400}]}
    assert egress.filter_guard([egress.GuardedInput("did:op:2", None, (None,))]) is None
    with pytest.raises(egress.GuardUnavailable, match="did:op:1 file 1 could not be hashed"):
        egress.filter_guard([egress.GuardedInput("did:op:1", egress.EgressGuard(True), (a, None))])


@pytest.mark.skipif(not hasattr(os, "SEEK_DATA"), reason="needs SEEK_DATA")
def test_hashing_does_not_change_what_is_copied(tmp_path):
    (tmp_path / "src").mkdir()
    data = os.urandom(3 * 1024 * 1024 + 17)
    (tmp_path / "src" / "r").write_bytes(data)
    rc, report, _ = run_filter(tmp_path, hash=True)
    assert rc == 0 and report["files"][0]["sha256"] == sha(data)
    assert (tmp_path / "out" / "outputs" / "r").read_bytes() == data


# -- on real Docker, through the daemon ---------------------------------------------------------

COPY_INPUT = """
import json, os, shutil
did = json.loads(os.environ["DIDS"])[0]
shutil.copy(f"/data/inputs/{did}/0", "/data/outputs/leak.csv")
open("/data/outputs/mean.txt", "w").write("2.5")
print("copied the input")
"""


def _guarded_dataset(assets: Path, content: bytes, guard: object) -> str:
    from tests.helpers import did_for, write_ddo

    (assets / "files").mkdir(parents=True, exist_ok=True)
    name = hashlib.sha256(content + json.dumps(guard).encode()).hexdigest()[:12]
    (assets / "files" / name).write_bytes(content)
    return write_ddo(assets, {
        "id": did_for("dataset", name), "metadata": {"type": "dataset", "name": name}, "nft": {"owner": ""},
        "services": [{"id": "compute", "type": "compute", "files": [{"type": "file", "path": f"files/{name}"}],
                      "compute": {"allowRawAlgorithm": True, "egressGuard": guard}}]})


@pytest.mark.docker
def test_a_verbatim_copy_of_a_guarded_input_ends_at_74_with_logs_and_no_outputs(shared_daemon):
    from tests.helpers import raw, result_of, wait_done

    did = _guarded_dataset(shared_daemon.assets, b"id,secret\n1,alice\n2,bob\n", {"noVerbatimCopies": True})
    client = shared_daemon.client()
    job = wait_done(client, client.start(did, raw(COPY_INPUT), "ocean-compute")["jobId"])
    assert job["status"] == 74, job
    assert job["error"] == (f"outputs rejected: output leak.csv is a verbatim copy of dataset {did} file 0, which "
                            "its egress guard forbids to publish")
    kinds = [r["type"] for r in job["results"]]
    assert "output" not in kinds and "algorithmLog" in kinds and kinds[-1] == "attestation"
    assert "copied the input" in result_of(client, job, "algorithmLog").decode()
    verdict = json.loads(result_of(client, job, "attestation"))["statement"]["predicate"]["egressGuard"]
    assert verdict["verdict"] == "breached" and verdict["guards"] == [
        {"did": did, "noVerbatimCopies": True, "maxOutputRatio": None}]


@pytest.mark.docker
def test_outputs_within_the_guard_are_published_and_a_malformed_guard_refuses_the_job(shared_daemon):
    from runnerd.client import ApiError
    from tests.helpers import raw, result_of, wait_done

    did = _guarded_dataset(shared_daemon.assets, b"x" * 1000, {"noVerbatimCopies": True, "maxOutputRatio": 0.01})
    client = shared_daemon.client()
    job = wait_done(client, client.start(did, raw("open('/data/outputs/m.txt', 'w').write('mean=1')"),
                                         "ocean-compute")["jobId"])
    assert job["status"] == 70 and result_of(client, job, "output", "m.txt") == b"mean=1"
    assert json.loads(result_of(client, job, "attestation"))["statement"]["predicate"]["egressGuard"]["verdict"] \
        == "passed"
    over = wait_done(client, client.start(did, raw("open('/data/outputs/m.txt', 'w').write('y' * 11)"),
                                          "ocean-compute")["jobId"])
    assert over["status"] == 74 and "at most 10 bytes of outputs" in over["error"]
    bad = _guarded_dataset(shared_daemon.assets, b"z", {"noVerbatimCopy": True})
    with pytest.raises(ApiError) as refused:
        client.start(bad, raw("print(1)"), "ocean-compute")
    assert refused.value.status == 400 and refused.value.body["code"] == "invalid_egress_guard"


@pytest.mark.docker
def test_a_downloaded_dataset_without_a_checksum_is_hashed_and_guarded(make_daemon, http_server):
    """The provision step hashes every download (not only those with a checksum), so a URL
    dataset's guard and attestation have its digest."""
    from tests.helpers import raw, result_of, wait_done, write_ddo

    data = b"id,secret\n7,carol\n"
    http_server.files["/guarded.csv"] = data
    daemon = make_daemon(provisionAllow=[http_server.host])
    did = write_ddo(daemon.assets, {
        "id": "did:op:" + "7e" * 32, "metadata": {"type": "dataset", "name": "guarded"}, "nft": {"owner": ""},
        "services": [{"id": "compute", "type": "compute", "files": [{"type": "url", "url": http_server.url(
            "/guarded.csv")}], "compute": {"allowRawAlgorithm": True, "egressGuard": {"noVerbatimCopies": True}}}]})
    client = daemon.client()
    job = wait_done(client, client.start(did, raw(COPY_INPUT), "ocean-compute")["jobId"])
    assert job["status"] == 74 and "leak.csv is a verbatim copy of dataset" in job["error"], job
    inputs = json.loads(result_of(client, job, "attestation"))["statement"]["predicate"]["inputs"]
    assert inputs == [{"did": did, "index": 0, "source": "download", "sha256": sha(data), "size": len(data)}]
    assert http_server.url("/") not in result_of(client, job, "attestation").decode()  # never the URL
