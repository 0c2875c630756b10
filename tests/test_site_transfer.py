"""The job-site transfer (#17): how a provision or filter step on a node that shares no disk with
runnerd gets its seed and sends back its out folder. No Docker: the real daemon of the route tests
runs with DOCKER_HOST pointing nowhere, so the jobs imported into its store stay at the step they
were put at (the runner waits dockerOutageSeconds for Docker), which is what the routes look at.

- tokens (engine/site_tokens.py);
- the seed (engine/site_archive.py) against what the local workspace writes;
- hostile uploads (engine/site_upload.py, runnerd/steps/sitetar.py), each leaving the previous
  out folder as it was;
- the routes over real HTTP to a real daemon, and the site agent (runnerd/steps/site_agent.py) as a
  real subprocess against them.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import shutil
import socket
import stat
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import httpx
import pytest

from runnerd.config import parse_config
from runnerd.domain import (
    AlgorithmContainer,
    AlgorithmPlan,
    InputPlan,
    Job,
    JobPlan,
    JobStatus,
    LocalFile,
    PlannedJob,
    RawCode,
    RemoteFile,
    StepKind,
)
from runnerd.engine import pins, site_archive
from runnerd.engine.site_tokens import KEY_FILE, SiteKeyError, SiteTokens
from runnerd.engine.site_upload import Caps, Upload, UploadRefused, UploadTooLarge
from runnerd.engine.workspace import Workspace
from runnerd.layout import JobPaths
from runnerd.steps import sitetar
from tests.helpers import PY_IMAGE, Daemon, base_config, free_port
from tests.test_openapi import assert_error_shape, conform

ROOT = Path(__file__).resolve().parent.parent
AGENT = ROOT / "runnerd" / "steps" / "site_agent.py"
OWNER = "0x" + "ab" * 20
JOB_IDS = (os.getuid(), os.getgid())  # the workspace's jobUser in the unit tests: whoever runs them


# -- jobs -----------------------------------------------------------------------------------------

def make_plan(assets: Path, local_algorithm: bool = False, local_files: bool = True) -> JobPlan:
    """Two inputs (one with a local file and a URL, one with two local files), raw code or a local
    algorithm file, custom data."""
    assets.mkdir(parents=True, exist_ok=True)
    for name, content in (("a.csv", b"a,b\n1,2\n"), ("b1.bin", bytes(range(256)) * 40), ("b2.txt", b"")):
        (assets / name).write_bytes(content)
        os.chmod(assets / name, 0o644)
    (assets / "algo.py").write_text("print('local algorithm')\n")
    os.chmod(assets / "algo.py", 0o755)
    inputs = (
        InputPlan("did:op:" + "1" * 64, {"id": "did:op:" + "1" * 64, "name": "one"},
                  (LocalFile(str(assets / "a.csv")), RemoteFile("https://example.invalid/x"))),
        InputPlan("did:op:" + "2" * 64, {"id": "did:op:" + "2" * 64, "name": "twö"},
                  (LocalFile(str(assets / "b1.bin")), LocalFile(str(assets / "b2.txt")))),
    )
    if not local_files:
        inputs = (InputPlan("did:op:" + "4" * 64, {}, (RemoteFile("https://example.invalid/y"),)),)
    repo, _, tag = PY_IMAGE.rpartition(":")
    container = AlgorithmContainer("python3 $ALGO", repo, tag)
    if local_algorithm:
        algorithm = AlgorithmPlan("did:op:" + "3" * 64, {"id": "did:op:" + "3" * 64},
                                  LocalFile(str(assets / "algo.py")), container)
    else:
        algorithm = AlgorithmPlan(None, None, RawCode("import sys\nprint('raw', sys.argv)\n"), container,
                                  algocustomdata={"k": [1, "é"]})
    return JobPlan(inputs, algorithm, network=False, secret=secrets.token_hex(8))


def make_job(plan: JobPlan, status: JobStatus = JobStatus.CONFIGURING, job_id: str | None = None) -> PlannedJob:
    row = Job(job_id or secrets.token_hex(16), OWNER, plan.inputs[0].did, "ocean-compute", "0x" + secrets.token_hex(32),
              plan.algorithm.did or "", [i.did for i in plan.inputs], status=status, date_created=time.time())
    return row.with_plan(plan)


def tree(root: Path) -> dict[str, bytes | None]:
    """path -> content (None for a folder) of everything under root."""
    out: dict[str, bytes | None] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        out[rel] = None if path.is_dir() else path.read_bytes()
    return out


def tar_of(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def reg(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info, None


# -- tokens ---------------------------------------------------------------------------------------

def test_a_token_is_bound_to_its_job_and_step_and_to_the_daemon_key(tmp_path):
    tokens = SiteTokens(tmp_path)
    t = tokens.token("job-1", StepKind.PROVISION)
    assert len(t) == 64 and int(t, 16) >= 0
    assert tokens.token("job-1", StepKind.PROVISION) == t  # stateless: the same every time
    assert SiteTokens(tmp_path).token("job-1", StepKind.PROVISION) == t  # and after a restart (the key file)
    others = {tokens.token("job-2", StepKind.PROVISION), tokens.token("job-1", StepKind.FILTER),
              SiteTokens(tmp_path / "other").token("job-1", StepKind.PROVISION)}
    assert t not in others and len(others) == 3
    assert tokens.valid("job-1", StepKind.PROVISION, t)
    for job, step, token in (("job-2", StepKind.PROVISION, t), ("job-1", StepKind.FILTER, t),
                             ("job-1", StepKind.ALGORITHM, t), ("job-1", StepKind.PROVISION, t[:-1]),
                             ("job-1", StepKind.PROVISION, t.upper()), ("job-1", StepKind.PROVISION, ""),
                             ("job-1", StepKind.PROVISION, "é" * 64)):
        assert not tokens.valid(job, step, token), (job, step, token)
    with pytest.raises(ValueError):
        tokens.token("job-1", StepKind.ALGORITHM)  # the algorithm never talks to runnerd
    key = tmp_path / KEY_FILE
    assert len(key.read_bytes()) == 32 and stat.S_IMODE(key.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left


def test_the_key_is_made_once_when_many_race_for_it(tmp_path):
    made: list[bytes] = []
    threads = [threading.Thread(target=lambda: made.append(SiteTokens(tmp_path).key())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(made)) == 1 and made[0] == (tmp_path / KEY_FILE).read_bytes()


@pytest.mark.parametrize("content", [b"", b"short", bytes(33)])
def test_a_key_file_that_is_not_a_key_is_a_clear_error(tmp_path, content):
    (tmp_path / KEY_FILE).write_bytes(content)
    with pytest.raises(SiteKeyError, match=r"site.key holds \d+ bytes, not a 32-byte key; remove it"):
        SiteTokens(tmp_path).token("j", StepKind.FILTER)
    assert (tmp_path / KEY_FILE).read_bytes() == content  # never silently replaced (tokens would change)


def test_a_loose_key_file_is_tightened(tmp_path):
    (tmp_path / KEY_FILE).write_bytes(bytes(range(32)))
    os.chmod(tmp_path / KEY_FILE, 0o644)
    assert SiteTokens(tmp_path).key() == bytes(range(32))
    assert stat.S_IMODE((tmp_path / KEY_FILE).stat().st_mode) == 0o600


# -- the seed -------------------------------------------------------------------------------------

def _extracted(entries: list[site_archive.Entry], into: Path) -> tuple[dict, dict]:
    (into / "data").mkdir(parents=True)
    (into / "out").mkdir()
    body = b"".join(site_archive.stream(entries))
    assert len(body) == site_archive.length(entries)
    sitetar.extract(io.BytesIO(body), {"data": str(into / "data"), "out": str(into / "out")}, keep_exec=True)
    return tree(into / "data"), tree(into / "out")


@pytest.mark.parametrize("local_algorithm", [False, True], ids=["raw-code", "local-algorithm"])
def test_the_provision_seed_is_what_the_local_workspace_puts_in_data(tmp_path, local_algorithm):
    job = make_job(make_plan(tmp_path / "assets", local_algorithm))
    env = parse_config({"environments": [{"id": "ocean-compute", "diskQuota": "none"}]}).environments[0]
    paths = Workspace(tmp_path / "data", JOB_IDS)._prepare(job, env)  # pins the local files, as a site's prepare must
    (paths.provision_out / "note").write_text("from runnerd")
    data, out = _extracted(site_archive.seed_entries(job, paths, StepKind.PROVISION), tmp_path / "node")
    local = tree(paths.fs)
    # The same tree; where the workspace leaves a mount point for a local file, the seed has the file.
    assert set(data) == set(local)
    assets = tmp_path / "assets"
    d1, d2 = "1" * 64, "2" * 64
    locals_ = {f"inputs/{d1}/0": assets / "a.csv", f"inputs/{d2}/0": assets / "b1.bin",
               f"inputs/{d2}/1": assets / "b2.txt"}
    if local_algorithm:
        locals_["transformations/algorithm"] = assets / "algo.py"
    for rel, content in data.items():
        assert content == (locals_[rel].read_bytes() if rel in locals_ else local[rel]), rel
    assert data[f"ddos/{d2}"] == json.dumps({"id": "did:op:" + d2, "name": "twö"}).encode()
    assert f"inputs/{d1}/1" not in data  # the URL is the provision step's to fetch
    if local_algorithm:
        assert f"ddos/{'3' * 64}" in data and "inputs/algoCustomData.json" not in data
    else:
        assert data["inputs/algoCustomData.json"] == b'{"k": [1, "\\u00e9"]}'
        assert data["transformations/algorithm"] == b"import sys\nprint('raw', sys.argv)\n"
    mode = stat.S_IMODE((tmp_path / "node" / "data" / "transformations" / "algorithm").stat().st_mode)
    assert mode == 0o755  # raw code and an executable local file stay executable, as locally
    assert out == {"note": b"from runnerd"}


def test_the_filter_seed_is_its_out_folder_only(tmp_path):
    job = make_job(make_plan(tmp_path / "assets"), JobStatus.FILTERING)
    paths = JobPaths.for_job(tmp_path / "data", job.job_id)
    paths.results.mkdir(parents=True)
    (paths.results / "guard.json").write_text('{"inputs": {}}')
    (paths.results / "link").symlink_to("/etc/passwd")  # never runnerd's: left out
    data, out = _extracted(site_archive.seed_entries(job, paths, StepKind.FILTER), tmp_path / "node")
    assert data == {} and out == {"guard.json": b'{"inputs": {}}'}


def test_a_seed_needs_the_jobs_pins(tmp_path):
    job = make_job(make_plan(tmp_path / "assets"))
    with pytest.raises(site_archive.SeedNotReady):
        site_archive.seed_entries(job, JobPaths.for_job(tmp_path / "data", job.job_id), StepKind.PROVISION)


def test_a_pin_that_changes_after_listing_breaks_the_stream_rather_than_lie(tmp_path):
    job = make_job(make_plan(tmp_path / "assets"))
    paths = JobPaths.for_job(tmp_path / "data", job.job_id)
    paths.root.mkdir(parents=True)
    pins.pin_all(job, paths, *JOB_IDS)
    entries = site_archive.seed_entries(job, paths, StepKind.PROVISION)
    with open(paths.pinned_input(1, 0), "ab") as f:  # the very inode the pin holds
        f.write(b"more")
    with pytest.raises(OSError, match="changed size"):
        b"".join(site_archive.stream(entries))


# -- uploads --------------------------------------------------------------------------------------

SMALL = Caps(1 << 20, 16)


def _upload(target: Path, body: bytes, caps: Caps = SMALL) -> tuple[int, int]:
    upload = Upload(target, caps)
    try:
        for i in range(0, len(body), 1000):
            upload.write(body[i:i + 1000])
        return upload.install()
    finally:
        upload.discard()


def _old_state(tmp_path: Path) -> tuple[Path, dict]:
    target = tmp_path / "job" / "results"
    (target / "outputs").mkdir(parents=True)
    (target / "outputs" / "old.txt").write_text("the previous attempt")
    return target, tree(target)


def test_an_upload_replaces_the_out_folder_whole(tmp_path):
    target, _ = _old_state(tmp_path)
    info = tarfile.TarInfo("out/outputs/empty")
    info.type = tarfile.DIRTYPE
    info.mode = 0o7777
    body = tar_of(reg("out/report.json", b'{"ok": true}'), reg("out/outputs/a/b.txt", b"b" * 5000), (info, None))
    assert _upload(target, body) == (3, 5012)
    assert tree(target) == {"report.json": b'{"ok": true}', "outputs": None, "outputs/a": None,
                            "outputs/a/b.txt": b"b" * 5000, "outputs/empty": None}
    assert stat.S_IMODE(target.stat().st_mode) == 0o700  # runnerd's only
    for path in target.rglob("*"):
        want = 0o755 if path.is_dir() else 0o644
        assert stat.S_IMODE(path.stat().st_mode) == want, path  # no setuid, no 0777, whatever was asked
    assert sorted(p.name for p in target.parent.iterdir()) == ["results"]  # no spool, no temp folder left


def _lying(name: str, declared: int, sent: int) -> bytes:
    """A header that declares `declared` bytes followed by `sent` bytes and no end."""
    head = sitetar.header(name, size=declared)
    return head + b"z" * sent


HOSTILE = {
    "symlink": (tar_of(reg("out/ok"), special("out/passwd", tarfile.SYMTYPE, "/etc/passwd")), "a symbolic link"),
    "hardlink": (tar_of(reg("out/ok"), special("out/h", tarfile.LNKTYPE, "out/ok")), "a hard link"),
    "dotdot": (tar_of(reg("out/../x")), r"leaves its folder \(\.\.\)"),
    "absolute": (tar_of(reg("/out/x")), "is an absolute name"),
    "device": (tar_of(special("out/null", tarfile.CHRTYPE)), "a character device"),
    "fifo": (tar_of(special("out/fifo", tarfile.FIFOTYPE)), "a fifo"),
    "sparse": (tar_of(special("out/s", tarfile.GNUTYPE_SPARSE)), "a sparse file"),
    "duplicate": (tar_of(reg("out/a", b"1"), reg("out/a", b"2")), "appears twice"),
    "inside-a-file": (tar_of(reg("out/a", b"1"), reg("out/a/b", b"2")), "is inside a file"),
    "other-root": (tar_of(reg("data/x")), "is not under out/"),
    "too-many-entries": (tar_of(*(reg(f"out/f{i}") for i in range(17))), "more than 16 entries"),
    # a small header, then more bytes than the cap: counted as they are read, never by the header
    "lying-header-small": (_lying("out/big", 10, 0) + sitetar.padding(0) + b"z" * 3000, "malformed tar header"),
    "truncated": (tar_of(reg("out/a", b"abc"))[:1024], "ends"),
    "garbage": (b"\x01" * 4096, "malformed tar header"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_upload_is_refused_and_leaves_the_previous_folder(tmp_path, case):
    body, why = HOSTILE[case]
    target, before = _old_state(tmp_path)
    with pytest.raises(UploadRefused, match=why):
        _upload(target, body)
    assert tree(target) == before
    assert sorted(p.name for p in target.parent.iterdir()) == ["results"]  # no spool, no half folder


def test_a_header_that_promises_more_than_the_cap_is_stopped_by_what_arrives(tmp_path):
    target, before = _old_state(tmp_path)
    with pytest.raises(UploadTooLarge):
        _upload(target, _lying("out/big", 10 ** 12, 1 << 20), Caps(100_000, 16))
    assert tree(target) == before and sorted(p.name for p in target.parent.iterdir()) == ["results"]
    # the extractor's own cap counts the bytes it reads too, not the header's size
    (tmp_path / "x").mkdir()
    with pytest.raises(sitetar.TarRefused, match="more than 1000 bytes"):
        sitetar.extract(io.BytesIO(_lying("out/big", 10 ** 12, 5000)), {"out": str(tmp_path / "x")}, 1000)


def test_the_spool_stops_at_its_cap_as_bytes_arrive(tmp_path):
    target, before = _old_state(tmp_path)
    upload = Upload(target, Caps(10_000, 16))
    with pytest.raises(UploadTooLarge):
        for _ in range(100):
            upload.write(b"z" * 1000)
    assert upload.received <= 11_000 and upload.spool.stat().st_size <= 10_000
    upload.discard()
    assert tree(target) == before and sorted(p.name for p in target.parent.iterdir()) == ["results"]


def test_the_reader_never_follows_a_link_already_in_a_root(tmp_path):
    """The agent extracts into /data and /runnerd/out, which exist before it: a link there (from
    a previous attempt, say) must not carry a write elsewhere."""
    root, elsewhere = tmp_path / "root", tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    (root / "inputs").symlink_to(elsewhere)
    (root / "file").symlink_to(elsewhere / "file")
    for name in ("data/inputs/x", "data/file"):
        with pytest.raises(sitetar.TarRefused):
            sitetar.extract(io.BytesIO(tar_of(reg(name))), {"data": str(root)})
    assert list(elsewhere.iterdir()) == []


# -- the routes, over real HTTP to a real daemon --------------------------------------------------

NOWHERE = "unix:///nonexistent/runnerd-test-no-docker.sock"


class Site:
    """A real daemon whose Docker never answers, with jobs put at the steps the tests need."""

    def __init__(self, root: Path):
        self.assets = root / "plan-assets"
        self.daemon = Daemon(root / "d", base_config(dockerOutageSeconds=3600, requestBodySeconds=2, environments=[
            {"id": "ocean-compute", "diskQuota": "none", "diskGB": 0.01, "maxOutputFiles": 4},
        ]))
        plan = make_plan(self.assets)
        self.provision = make_job(plan, JobStatus.CONFIGURING)
        self.filter = make_job(plan, JobStatus.FILTERING)
        self.running = make_job(make_plan(self.assets / "r", local_files=False), JobStatus.RUNNING)
        ended = make_job(plan, JobStatus.COMPLETED)
        self.ended = Job(**{f: getattr(ended, f) for f in Job.__dataclass_fields__})  # stored without its plan
        self.jobs = [self.provision, self.filter, self.running, self.ended]

    def start(self) -> "Site":
        import asyncio

        from runnerd.store import JobStore
        from runnerd.store.connection import Database

        async def seed() -> None:
            self.daemon.data_dir.mkdir(parents=True, exist_ok=True)
            db = await Database.open(self.daemon.data_dir / "runnerd.db")
            try:
                await JobStore(db).import_jobs(self.jobs)
            finally:
                await db.close()

        asyncio.run(seed())
        # The filter's host out folder as engine/trust.py leaves it before the filter starts.
        self.paths(self.filter).results.mkdir(parents=True)
        (self.paths(self.filter).results / "guard.json").write_text('{"inputs": {}}')
        saved = os.environ.get("DOCKER_HOST")
        os.environ["DOCKER_HOST"] = NOWHERE
        try:
            self.daemon.start(wait=False)
        finally:
            os.environ.pop("DOCKER_HOST") if saved is None else os.environ.__setitem__("DOCKER_HOST", saved)
        deadline = time.time() + 60
        while time.time() < deadline:  # ready (recovered) means 503 `docker_unavailable`, not `starting`
            try:
                if httpx.get(f"{self.url}/health", timeout=2).json().get("code") == "docker_unavailable":
                    break
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.1)
        else:
            raise TimeoutError(self.daemon.log())
        # The runner prepares the recovered provisioning job (its pins) before it waits for Docker.
        while not self.paths(self.provision).pinned_input(1, 1).exists():
            assert time.time() < deadline, self.daemon.log()
            time.sleep(0.1)
        return self

    @property
    def url(self) -> str:
        return self.daemon.url

    def paths(self, job: Job) -> JobPaths:
        return JobPaths.for_job(self.daemon.data_dir, job.job_id)

    def token(self, job: Job, step: StepKind) -> str:
        return SiteTokens(self.daemon.data_dir).token(job.job_id, step)

    def route(self, job: Job, step: str, way: str) -> str:
        return f"{self.url}/site/v1/jobs/{job.job_id}/{step}/{way}"

    def auth(self, job: Job, step: StepKind) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(job, step)}"}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    site = Site(tmp_path_factory.mktemp("site")).start()
    yield site
    site.daemon.stop()




def no_host_path(site: Site, response: httpx.Response, documented: bool = True) -> httpx.Response:
    """The answer names no path of runnerd's host, and is what the OpenAPI document says."""
    text = (response.text if "json" in response.headers.get("content-type", "") else "") + \
        json.dumps(dict(response.headers))
    assert str(site.daemon.root) not in text and "/jobs/" not in text.replace("/site/v1/jobs/", ""), text
    way = response.request.url.path.rsplit("/", 1)[1]
    if not documented:  # (schemathesis cannot read back a streamed request)
        return response
    return conform(response, path="/site/v1/jobs/{jobId}/{step}/" + way)


def _seed_tree(body: bytes, into: Path) -> tuple[dict, dict]:
    (into / "data").mkdir(parents=True)
    (into / "out").mkdir()
    sitetar.extract(io.BytesIO(body), {"data": str(into / "data"), "out": str(into / "out")}, keep_exec=True)
    return tree(into / "data"), tree(into / "out")


def test_a_step_fetches_its_seed_over_http(site, tmp_path):
    r = httpx.get(site.route(site.provision, "provision", "in"), headers=site.auth(site.provision, StepKind.PROVISION))
    no_host_path(site, r)
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-tar"
    assert int(r.headers["content-length"]) == len(r.content)
    data, out = _seed_tree(r.content, tmp_path)
    assert data[f"inputs/{'2' * 64}/0"] == (site.assets / "b1.bin").read_bytes()
    assert data["transformations/algorithm"] == b"import sys\nprint('raw', sys.argv)\n"
    assert out == {}
    r = httpx.get(site.route(site.filter, "filter", "in"), headers=site.auth(site.filter, StepKind.FILTER))
    assert no_host_path(site, r).status_code == 200
    assert _seed_tree(r.content, tmp_path / "f") == ({}, {"guard.json": b'{"inputs": {}}'})


def test_a_wrong_token_an_unknown_job_and_a_wrong_step_get_one_answer(site):
    good = site.token(site.provision, StepKind.PROVISION)
    unknown = Job("f" * 32, OWNER, "", "ocean-compute", "", "", [])
    cases = [
        ("GET", site.route(site.provision, "provision", "in"), {}),
        ("GET", site.route(site.provision, "provision", "in"), {"Authorization": f"Basic {good}"}),
        ("GET", site.route(site.provision, "provision", "in"), {"Authorization": "Bearer " + "0" * 64}),
        ("GET", site.route(site.provision, "provision", "in"), site.auth(site.filter, StepKind.PROVISION)),
        ("GET", site.route(site.provision, "filter", "in"), site.auth(site.provision, StepKind.PROVISION)),
        ("GET", site.route(site.provision, "algorithm", "in"), site.auth(site.provision, StepKind.PROVISION)),
        ("GET", site.route(unknown, "provision", "in"), site.auth(unknown, StepKind.PROVISION)),
        ("PUT", site.route(site.filter, "filter", "out"), site.auth(site.provision, StepKind.FILTER)),
        ("PUT", site.route(unknown, "filter", "out"), site.auth(unknown, StepKind.FILTER)),
    ]
    bodies = set()
    for method, url, headers in cases:
        r = httpx.request(method, url, headers=headers, content=b"x" * 10 if method == "PUT" else None)
        assert r.status_code == 403, (method, url, r.text)
        no_host_path(site, r)
        bodies.add(r.content)
    assert len(bodies) == 1 and assert_error_shape(r)["code"] == "forbidden"


def test_a_job_at_another_step_or_ended_is_refused_with_its_reason(site):
    r = httpx.get(site.route(site.running, "provision", "in"), headers=site.auth(site.running, StepKind.PROVISION))
    assert r.status_code == 409 and r.json()["code"] == "step_not_running" and "at 40" in r.json()["error"]
    no_host_path(site, r)
    r = httpx.put(site.route(site.provision, "filter", "out"), headers=site.auth(site.provision, StepKind.FILTER),
                  content=tar_of(reg("out/report.json")))
    assert r.status_code == 409, r.text  # provisioning: the filter's folder cannot be written yet
    no_host_path(site, r)
    assert not site.paths(site.provision).results.joinpath("report.json").exists()
    r = httpx.get(site.route(site.ended, "filter", "in"), headers=site.auth(site.ended, StepKind.FILTER))
    assert r.status_code == 410 and r.json()["code"] == "job_ended" and "has ended" in r.json()["error"]
    no_host_path(site, r)


def _put_raw(site: Site, job: Job, step: StepKind, head: dict[str, str], chunks) -> bytes:
    """A PUT over a plain socket, so that a body the daemon stops reading can be seen as such:
    what the daemon answered, read after it has stopped taking the body."""
    with socket.create_connection(("127.0.0.1", site.daemon.port), timeout=30) as sock:
        path = f"/site/v1/jobs/{job.job_id}/{step.value}/out"
        lines = [f"PUT {path} HTTP/1.1", "Host: x", f"Authorization: Bearer {site.token(job, step)}",
                 *(f"{k}: {v}" for k, v in head.items())]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        try:
            for chunk in chunks:
                sock.sendall(chunk)
        except OSError:
            pass  # the daemon closed its side: its answer is in the socket
        answer = b""
        try:
            while data := sock.recv(65536):
                answer += data
        except OSError:
            pass
        return answer


def test_an_upload_over_http_becomes_the_host_folder_and_a_hostile_one_changes_nothing(site):
    results = site.paths(site.filter).results
    body = tar_of(reg("out/guard.json", b'{"inputs": {}}'), reg("out/report.json", b'{"ok": true}'),
                  reg("out/outputs/sub/r.txt", b"result"))
    r = httpx.put(site.route(site.filter, "filter", "out"), headers=site.auth(site.filter, StepKind.FILTER),
                  content=iter([body[:700], body[700:]]))  # chunked, as the agent sends it
    assert no_host_path(site, r, documented=False).status_code == 200 and r.json() == {"entries": 3, "bytes": 32}
    assert tree(results) == {"guard.json": b'{"inputs": {}}', "report.json": b'{"ok": true}', "outputs": None,
                             "outputs/sub": None, "outputs/sub/r.txt": b"result"}
    before = tree(results)
    for case in ("symlink", "dotdot", "duplicate", "too-many-entries", "lying-header-small"):
        hostile = HOSTILE[case][0] if case != "too-many-entries" else tar_of(*(reg(f"out/f{i}") for i in range(21)))
        r = httpx.put(site.route(site.filter, "filter", "out"), headers=site.auth(site.filter, StepKind.FILTER),
                      content=hostile)
        assert r.status_code == 400 and r.json()["code"] == "invalid_archive", (case, r.text)
        no_host_path(site, r)
        assert tree(results) == before, case
    # a name component longer than the filesystem holds (255 bytes): the sender's, so 400, never a 500
    r = httpx.put(site.route(site.filter, "filter", "out"), headers=site.auth(site.filter, StepKind.FILTER),
                  content=tar_of(reg("out/" + "n" * 300, b"x")))
    assert r.status_code == 400 and r.json()["code"] == "invalid_archive", r.text
    assert tree(results) == before
    # more than diskGB + 1 MiB, chunked, never ending: refused once the cap is passed, connection closed
    zeros = bytes(1 << 20)
    answer = _put_raw(site, site.filter, StepKind.FILTER, {"Transfer-Encoding": "chunked"},
                      (b"%x\r\n%s\r\n" % (len(zeros), zeros) for _ in range(1000)))
    assert answer.startswith(b"HTTP/1.1 413") and b'"payload_too_large"' in answer, answer[:300]
    # a Content-Length over the cap: refused before a byte of the body is read
    answer = _put_raw(site, site.filter, StepKind.FILTER, {"Content-Length": str(10 ** 12)}, [])
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
    # a body that stalls: 408 after requestBodySeconds (2 s here), connection closed
    answer = _put_raw(site, site.filter, StepKind.FILTER, {"Transfer-Encoding": "chunked"}, [b"a\r\n0123456789\r\n"])
    assert answer.startswith(b"HTTP/1.1 408"), answer[:300]
    assert tree(results) == before
    assert [p.name for p in results.parent.iterdir() if p.name.startswith(".site-")] == []  # no spool left


# -- the site agent, a real subprocess against the daemon ---------------------------------------------

PROVISION_STEP = r"""
import json, os, sys
data, out = os.environ["RUNNERD_DATA_ROOT"], os.environ["RUNNERD_OUT_ROOT"]
seen = sorted(os.path.relpath(os.path.join(d, f), data) for d, _, fs in os.walk(data) for f in fs)
print("provision step ran; token given:", "RUNNERD_SITE_TOKEN" in os.environ)
with open(os.path.join(out, "report.json"), "w") as f:
    json.dump({"ok": True, "seen": seen}, f)
sys.exit(int(os.environ.get("STEP_EXIT", "0")))
"""

FILTER_STEP = r"""
import os, sys
out = os.environ["RUNNERD_OUT_ROOT"]
guard = open(os.path.join(out, "guard.json")).read()
os.makedirs(os.path.join(out, "outputs", "deep"))
with open(os.path.join(out, "outputs", "deep", "result.txt"), "w") as f:
    f.write("filtered; guard was " + guard)
os.symlink("/etc/passwd", os.path.join(out, "outputs", "link"))
open(os.path.join(out, "report.json"), "w").write('{"ok": false, "error": "limits"}')
print("filter step ran", flush=True)
sys.stderr.write("a line on stderr\n")
sys.exit(3)
"""


def run_agent(tmp_path: Path, url: str, job: Job, step: str, token: str, script: str = "",
              **env: str) -> subprocess.CompletedProcess:
    steps, data, out = tmp_path / "steps", tmp_path / "data", tmp_path / "out"
    for d in (steps, data, out):
        d.mkdir(exist_ok=True)
    (steps / f"{step}.py").write_text(script)
    full = {**{k: v for k, v in os.environ.items() if not k.startswith("RUNNERD_")},
            "RUNNERD_SITE_URL": url, "RUNNERD_SITE_TOKEN": token, "RUNNERD_JOB": job.job_id, "RUNNERD_STEP": step,
            "RUNNERD_DATA_ROOT": str(data), "RUNNERD_OUT_ROOT": str(out), "RUNNERD_STEP_DIR": str(steps), **env}
    return subprocess.run([sys.executable, str(AGENT)], env=full, capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)


def test_the_agent_fetches_runs_and_sends_back_a_provision_step(site, tmp_path):
    token = site.token(site.provision, StepKind.PROVISION)
    proc = run_agent(tmp_path, site.url, site.provision, "provision", token, PROVISION_STEP)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "provision step ran; token given: False\n" and proc.stderr == ""
    report = json.loads(site.paths(site.provision).provision_report.read_text())
    d1, d2 = "1" * 64, "2" * 64
    assert report == {"ok": True, "seen": sorted([f"ddos/{d1}", f"ddos/{d2}", f"inputs/{d1}/0", f"inputs/{d2}/0",
                                                  f"inputs/{d2}/1", "inputs/algoCustomData.json",
                                                  "transformations/algorithm"])}
    assert (tmp_path / "data" / "inputs" / d2 / "0").read_bytes() == (site.assets / "b1.bin").read_bytes()
    assert stat.S_IMODE(site.paths(site.provision).provision_report.stat().st_mode) == 0o644


def test_the_agent_sends_back_a_failed_step_and_exits_with_its_code(site, tmp_path):
    results = site.paths(site.filter).results
    shutil.rmtree(results)  # as trust.py leaves it before the filter: its guard only
    results.mkdir()
    (results / "guard.json").write_text('{"inputs": {"x": "y"}}')
    proc = run_agent(tmp_path, site.url, site.filter, "filter", site.token(site.filter, StepKind.FILTER), FILTER_STEP)
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == "filter step ran\n"  # the step's own output, passed through
    assert proc.stderr.splitlines() == ["a line on stderr",
                                        "site agent: left out out/outputs/link (not a regular file)"]
    assert tree(site.paths(site.filter).results) == {
        "guard.json": b'{"inputs": {"x": "y"}}', "report.json": b'{"ok": false, "error": "limits"}',
        "outputs": None, "outputs/deep": None, "outputs/deep/result.txt": b'filtered; guard was {"inputs": {"x": "y"}}'}


def test_the_agent_reports_outputs_over_the_cap_as_runnerd_answered(site, tmp_path):
    """runnerd stops reading at the cap and closes: the agent still reads its 413 and gives up at
    once (no retry of what cannot pass), and runnerd's folder is as it was."""
    results = site.paths(site.filter).results
    before = tree(results)
    step = ("import os\nwith open(os.path.join(os.environ['RUNNERD_OUT_ROOT'], 'big'), 'wb') as f:\n"
            "    f.truncate(256 << 20)\n")
    proc = run_agent(tmp_path, site.url, site.filter, "filter", site.token(site.filter, StepKind.FILTER), step)
    assert proc.returncode == 70, proc.stderr
    (line,) = proc.stderr.splitlines()
    assert "sending the filter outputs" in line and "refused" in line and "413 (payload_too_large" in line, line
    assert tree(results) == before


def test_the_agent_gives_up_at_once_on_a_refusal_without_showing_its_token(site, tmp_path):
    token = "0" * 64
    started = time.monotonic()
    proc = run_agent(tmp_path, site.url + "/", site.provision, "provision", token, "open('ran', 'w')")
    assert proc.returncode == 70 and time.monotonic() - started < 20
    (line,) = proc.stderr.splitlines()
    assert "from runnerd refused" in line and "403" in line and "forbidden" in line, line
    assert str(site.daemon.port) not in line  # the line is published: it names no address
    assert token not in proc.stderr + proc.stdout and "/site/v1" not in line and site.provision.job_id not in line
    assert not (tmp_path / "ran").exists()  # the step never ran


def test_the_agent_gives_up_after_its_retry_budget_when_runnerd_stays_away(tmp_path):
    port = free_port()
    job = make_job(make_plan(tmp_path / "assets", local_files=False))
    started = time.monotonic()
    proc = run_agent(tmp_path, f"http://127.0.0.1:{port}", job, "filter", "t" * 64, "raise SystemExit(0)",
                     RUNNERD_SITE_RETRY_SECONDS="2")
    assert proc.returncode == 70 and 1.5 <= time.monotonic() - started < 30
    (line,) = proc.stderr.splitlines()
    assert line.startswith("site agent: fetching the filter seed from runnerd failed for 2 s"), line
    assert str(port) not in line  # published: no address
    assert "ConnectionRefusedError" in line and "t" * 64 not in line


def _forward_later(port: int, target: int, after: float) -> threading.Thread:
    """Listen on `port` only after `after` seconds (runnerd restarting), then relay each
    connection to `target`."""
    def relay(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def serve() -> None:
        time.sleep(after)
        with socket.create_server(("127.0.0.1", port)) as server:
            server.settimeout(30)
            for _ in range(2):  # the seed, then the upload
                client, _ = server.accept()
                upstream = socket.create_connection(("127.0.0.1", target))
                threading.Thread(target=relay, args=(client, upstream), daemon=True).start()
                threading.Thread(target=relay, args=(upstream, client), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def test_the_agent_rides_out_a_runnerd_that_is_away_for_a_while(site, tmp_path):
    port = free_port()
    _forward_later(port, site.daemon.port, after=1.5)
    token = site.token(site.provision, StepKind.PROVISION)
    proc = run_agent(tmp_path, f"http://127.0.0.1:{port}", site.provision, "provision", token, PROVISION_STEP,
                     STEP_EXIT="0")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(site.paths(site.provision).provision_report.read_text())["ok"] is True


@pytest.mark.docker
def test_the_agent_runs_in_the_helper_image_as_the_job_user_with_a_read_only_root(site, tmp_path):
    """The agent's real conditions: the helper image's python3, jobUser, read-only root, a 16 MiB
    /tmp, its two files only (the host network here is only for reaching the test daemon on
    loopback)."""
    data, out, steps = tmp_path / "data", tmp_path / "out", tmp_path / "steps"
    for d in (data, out, steps):
        d.mkdir()
        os.chmod(d, 0o777)
    (steps / "provision.py").write_text(PROVISION_STEP)
    name = f"runnerd-test-site-agent-{secrets.token_hex(4)}"
    argv = ["docker", "run", "--rm", "--name", name, "--network", "host", "--read-only", "--user", "65532:65532",
            "--cap-drop", "ALL", "--security-opt", "no-new-privileges", "--tmpfs", "/tmp:size=16m",
            "-v", f"{AGENT}:/runnerd/site_agent.py:ro", "-v", f"{AGENT.parent / 'sitetar.py'}:/runnerd/sitetar.py:ro",
            "-v", f"{steps / 'provision.py'}:/runnerd/provision.py:ro", "-v", f"{data}:/data",
            "-v", f"{out}:/runnerd/out",
            "-e", "PYTHONDONTWRITEBYTECODE=1", "-e", f"RUNNERD_SITE_URL={site.url}",
            "-e", f"RUNNERD_SITE_TOKEN={site.token(site.provision, StepKind.PROVISION)}",
            "-e", f"RUNNERD_JOB={site.provision.job_id}", "-e", "RUNNERD_STEP=provision",
            "-e", "RUNNERD_DATA_ROOT=/data", "-e", "RUNNERD_OUT_ROOT=/runnerd/out", PY_IMAGE,
            "python3", "/runnerd/site_agent.py"]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "provision step ran; token given: False\n"
    report = json.loads(site.paths(site.provision).provision_report.read_text())
    assert f"inputs/{'2' * 64}/1" in report["seen"] and (data / "inputs" / ("2" * 64) / "1").stat().st_uid == 65532


def test_a_seed_whose_file_shrinks_mid_stream_arrives_short_never_wrong(site, tmp_path):
    """(Last of the module: it truncates one of the provisioning job's local files.) A pinned file
    that changes under the stream breaks the transfer, which the agent sees and retries; it never
    receives a stream that claims to be complete."""
    pin = site.paths(site.provision).pinned_input(1, 0)
    os.truncate(pin, 256 << 20)  # the very inode the pin holds (a hard link of the asset), sparse
    with httpx.stream("GET", site.route(site.provision, "provision", "in"),
                      headers=site.auth(site.provision, StepKind.PROVISION), timeout=30) as r:
        assert r.status_code == 200 and int(r.headers["content-length"]) > 256 << 20
        chunks = r.iter_raw()
        got = len(next(chunks))
        os.truncate(pin, 1024)
        with pytest.raises(httpx.RemoteProtocolError):
            for chunk in chunks:
                got += len(chunk)
    assert got < 256 << 20
    assert "the provision seed could not be sent whole" in site.daemon.log()
    assert httpx.get(f"{site.url}/health").json()["code"] == "docker_unavailable"  # the daemon is fine


def test_outputs_within_their_caps_in_many_files_fit_the_filter_s_upload_cap(tmp_path):
    """The upload cap is on the stream: maxOutputFiles files with long names, each with its
    headers, plus diskGB of bytes, fit (measured by the review: 1000 one-byte files with 200-byte
    names make a 2 MB stream: 10000 make 20 MB, twice the old diskGB + 1 MiB of a 0.01 GB disk)."""
    from runnerd.engine.site_transfer import caps
    from runnerd.steps import sitetar as tar_rules

    settings = parse_config({"environments": [{"id": "ocean-compute", "diskGB": 0.01, "maxOutputFiles": 10000}]})
    env = settings.environments[0]
    job = make_job(make_plan(tmp_path, local_files=False), JobStatus.FILTERING)
    cap = caps(job, StepKind.FILTER, settings)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for i in range(env.maxOutputFiles):
            info = tarfile.TarInfo(f"out/outputs/{i:04d}-" + "n" * 195)
            info.size = 1
            t.addfile(info, io.BytesIO(b"x"))
    assert len(buf.getvalue()) > env.disk_bytes + 1024 * 1024  # what the old cap refused
    assert len(buf.getvalue()) <= cap.bytes and cap.entries >= env.maxOutputFiles
    assert cap.bytes <= env.disk_bytes + 1024 * 1024 + cap.entries * (3 * tar_rules.BLOCK + tar_rules.MAX_NAME)
