"""Which image a consumer may run (issue #10 item 5): the one reference parser, the environment's
rawAlgorithmImages, registry hosts on this host or its network refused before Docker is asked to
pull, and Docker's or a registry's own words kept out of the job's `error`.

No test sends a packet anywhere: refusals are proven by the pull never being called (a fake
runtime, and a recording proxy in front of the real Docker socket)."""

from __future__ import annotations

import json
import logging
import time
from types import SimpleNamespace

import pytest

from runnerd import imageref
from runnerd.catalog import Catalog
from runnerd.client import ApiError
from runnerd.config import ConfigError, parse_config
from runnerd.containers.docker_runtime import DockerRuntime
from runnerd.engine.images import Images
from runnerd.engine.intake import Intake
from runnerd.errors import ImageMissing, PolicyRejected
from tests.dockerproxy import DockerProxy
from tests.fakes import FakeRuntime
from tests.helpers import BUSYBOX_IMAGE, PY_IMAGE, algorithm_asset, dataset, raw, wait_done

OWNER = "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23"
DIGEST = "sha256:" + "ab" * 32
PY_REPO = PY_IMAGE.rpartition(":")[0]


# -- the parser -------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, registry, repository, tag, digest", [
    ("python", "docker.io", "library/python", "", ""),
    ("python:3.12-slim", "docker.io", "library/python", "3.12-slim", ""),
    ("acme/algo:v1", "docker.io", "acme/algo", "v1", ""),
    ("docker.io/python", "docker.io", "library/python", "", ""),
    ("index.docker.io/library/python:3", "docker.io", "library/python", "3", ""),
    ("ghcr.io/acme/tools/algo:1.0", "ghcr.io", "acme/tools/algo", "1.0", ""),
    ("localhost/x", "localhost", "x", "", ""),
    ("localhost:5000/x:y", "localhost:5000", "x", "y", ""),
    ("127.0.0.1:5000/x:y", "127.0.0.1:5000", "x", "y", ""),
    ("[::1]:5000/x:y", "[::1]:5000", "x", "y", ""),
    (f"reg.example.com:443/a/b:t@{DIGEST}", "reg.example.com:443", "a/b", "t", DIGEST),
    (f"python@{DIGEST}", "docker.io", "library/python", "", DIGEST),
    ("2130706433/x", "docker.io", "2130706433/x", "", ""),  # no . or ':': a Docker Hub namespace
])
def test_a_reference_splits_like_docker_splits_it(text, registry, repository, tag, digest):
    ref = imageref.parse(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (registry, repository, tag, digest)
    assert imageref.parse(ref.reference).canonical == ref.canonical


@pytest.mark.parametrize("text", ["", "Python", "a//b", "x:-y", "x:y:z", "x@sha256:12", "x@md5:" + "a" * 32,
                                  "/x", "x/", "-x", "a" * 256, "bad host/x", "x:" + "t" * 129])
def test_a_malformed_reference_is_refused(text):
    with pytest.raises(ValueError):
        imageref.parse(text)


def test_container_parts_are_one_reference():
    assert imageref.from_parts("python", "", "").reference == "python:latest"
    assert imageref.from_parts("python", "3.12", DIGEST).reference == f"python@{DIGEST}"
    for image, tag in (("python:3.12", ""), ("python", "bad tag"), ("py thon", "1")):
        with pytest.raises(ValueError):
            imageref.from_parts(image, tag, "")


# -- which registries dockerd may be sent to -------------------------------------------------------

@pytest.mark.parametrize("text", [
    "127.0.0.1:5000/x:y", "127.0.0.1/x", "10.1.2.3:5000/x", "192.168.1.10/x", "169.254.169.254/x",
    "8.8.8.8/x", "[::1]:5000/x", "[fe80::1]/x", "[::ffff:127.0.0.1]:5000/x",
    "2130706433:5000/x", "0x7f000001:5000/x", "0x7f.1:5000/x", "0177.0.0.1/x", "127.1:5000/x",
    "localhost/x", "localhost:5000/x", "foo.localhost/x", "registry.local/x", "nas.lan:5000/x",
    "metadata.google.internal/x", "registry:5000/x",
])
def test_registries_on_this_host_or_its_network_are_refused(text):
    assert imageref.registry_refusal(imageref.parse(text), ()) is not None


@pytest.mark.parametrize("text", ["python:3.12", "acme/algo:1", "ghcr.io/acme/x:1", "quay.io/a/b",
                                  "registry.example.com:5000/x"])
def test_public_registry_names_are_left_to_dockerd(text):
    assert imageref.registry_refusal(imageref.parse(text), ()) is None


@pytest.mark.parametrize("text, allow", [
    ("localhost:5000/x", ["localhost"]), ("localhost:5000/x", ["localhost:5000"]),
    ("127.0.0.1:5000/x", ["127.0.0.0/8"]), ("2130706433:5000/x", ["127.0.0.1"]),
    ("[::1]:5000/x", ["::1"]), ("registry:5000/x", ["registry"]), ("10.0.0.5/x", ["10.0.0.0/24"]),
])
def test_registry_allow_lets_an_operator_use_a_local_registry(text, allow):
    assert imageref.registry_refusal(imageref.parse(text), allow) is None
    assert imageref.registry_refusal(imageref.parse(text), ["10.9.9.9", "other.example"]) is not None


# -- which images an environment lets a raw algorithm run ------------------------------------------

@pytest.mark.parametrize("ref, patterns, allowed", [
    ("python:3.12-slim", ["python:3.12-slim"], True),
    ("python:3.12-slim", ["docker.io/library/python:3.12-*"], True),
    ("python:3.11", ["python:3.12-*"], False),
    ("python:3.11", ["python"], True),  # a name alone: every tag
    ("pythonista:1", ["python"], False),
    ("ghcr.io/acme/algo:1", ["ghcr.io/acme/*"], True),
    ("ghcr.io/acme/x/algo:1", ["ghcr.io/acme/*"], False),  # * does not cross a /
    ("ghcr.io/evil/algo:1", ["ghcr.io/acme/*"], False),
    (f"anything@{DIGEST}", [DIGEST], True),
    (f"python@{DIGEST}", [f"python@{DIGEST}"], True),
    ("python:latest", [f"python@{DIGEST}"], False),
    ("private/secret-algo:1", ["python:3.12-slim"], False),
    ("private/secret-algo:1", ["*"], True),
])
def test_raw_algorithm_images_patterns(ref, patterns, allowed):
    assert imageref.allowed_by(imageref.parse(ref), patterns) is allowed


def test_the_image_keys_are_validated_and_the_default_is_the_clis_image():
    settings = parse_config({"environments": [{"id": "e"}]})
    assert settings.environments[0].rawAlgorithmImages == ("python:3.12-slim",) and settings.registryAllow == ()
    for bad in ({"environments": [{"id": "e", "rawAlgorithmImages": ["Bad Image"]}]},
                {"registryAllow": ["no such host!"], "environments": [{"id": "e"}]}):
        with pytest.raises(ConfigError):
            parse_config(bad)


# -- at submit ---------------------------------------------------------------------------------------

@pytest.fixture
def intake(tmp_assets):
    settings = parse_config({"registryAllow": ["10.0.0.0/8"], "environments": [
        {"id": "env", "rawAlgorithmImages": [PY_REPO, "127.0.0.1:5000/*", "10.1.2.3:5000/*"]}]})
    return Intake(settings, Catalog(tmp_assets)), tmp_assets


def _start(did: str, algorithm: dict) -> dict:
    return {"environment": "env", "algorithm": algorithm,
            "dataset": {"documentId": did, "serviceId": "compute", "transferTxId": "0x1"}}


def test_a_raw_algorithm_runs_only_a_listed_image(intake):
    check, assets = intake
    did = dataset(assets)
    check.build(_start(did, raw("print(1)", image=PY_IMAGE)), OWNER)
    for image in (BUSYBOX_IMAGE, "private/secret-algo:1"):  # on the host, but not listed
        with pytest.raises(PolicyRejected) as refused:
            check.build(_start(did, raw("print(1)", image=image)), OWNER)
        assert refused.value.code == "image_not_allowed" and refused.value.http_status == 400
        assert refused.value.field == "algorithm.container.image"
    # A digest alone would name any local image by its id: it is only as good as what it pins.
    with pytest.raises(PolicyRejected):
        check.build(_start(did, raw("print(1)", image="private/secret-algo:1", checksum=DIGEST)), OWNER)


def test_a_raw_algorithm_image_from_a_local_registry_is_refused_at_submit(intake):
    check, assets = intake
    with pytest.raises(PolicyRejected) as refused:
        check.build(_start(dataset(assets), raw("print(1)", image="127.0.0.1:5000/x:y")), OWNER)
    assert refused.value.code == "registry_not_allowed"
    check.build(_start(dataset(assets), raw("print(1)", image="10.1.2.3:5000/x:y")), OWNER)  # registryAllow


def test_a_published_algorithm_image_is_the_operators_choice(intake):
    check, assets = intake
    algo = algorithm_asset(assets, "print(1)", image="operator/trusted-algo:2")
    job = check.build(_start(dataset(assets, allow_raw=False), {"documentId": algo, "serviceId": "access"}), OWNER)
    assert job.plan.algorithm.container.image == "operator/trusted-algo"


# -- where the image is resolved (a job queued under an older policy) -------------------------------

async def test_a_refused_registry_is_never_pulled_from():
    fake = FakeRuntime(pullable={"127.0.0.1:5000/x:y"})
    images = Images(fake, "if-missing")
    with pytest.raises(ImageMissing) as refused:
        await images.resolve("127.0.0.1:5000/x", "y", "", allowed=("*",))
    assert "registry host is an IP address" in str(refused.value)
    assert fake.calls["pull"] == 0 and fake.calls["has_image"] == 0
    assert await Images(fake, "if-missing", ("127.0.0.1",)).resolve("127.0.0.1:5000/x", "y", "", ("*",)) \
        == "127.0.0.1:5000/x:y"  # allow-listed: pulled
    assert fake.calls["pull"] == 1


async def test_an_unlisted_image_is_refused_before_docker_is_asked():
    fake = FakeRuntime(images={"private/secret:1"})
    with pytest.raises(ImageMissing, match="not allowed for raw algorithms"):
        await Images(fake, "if-missing").resolve("private/secret", "1", "", allowed=("python",))
    assert sum(fake.calls.values()) == 0


async def test_a_repository_pin_never_runs_another_image_by_its_id():
    """`python@<id of a private image>`: Docker finds a bare id whatever its repository."""
    fake = FakeRuntime(images={DIGEST})
    with pytest.raises(ImageMissing, match="not on this host"):
        await Images(fake, "never").resolve("python", "3", DIGEST, allowed=("python",))
    assert await Images(fake, "never").resolve("python", "3", DIGEST, allowed=(DIGEST,)) == DIGEST
    assert await Images(fake, "never").resolve("python", "3", DIGEST) == DIGEST  # the operator's image


async def test_a_failed_pull_shows_a_fixed_text_and_logs_dockers_words(caplog):
    fake = FakeRuntime()

    async def pull(ref: str) -> None:
        raise ImageMissing(f"cannot pull {ref}", detail='Get "http://10.9.8.7/v2/": secret registry body')

    fake.pull = pull
    with caplog.at_level(logging.WARNING, "runnerd.images"), pytest.raises(ImageMissing) as failed:
        await Images(fake, "if-missing").resolve("acme/algo", "1", "", allowed=("*",))
    message = str(failed.value)
    reference = message.split("reference ")[1].split()[0]
    assert message == f"the image acme/algo:1 could not be pulled (reference {reference} in the daemon log)"
    assert f"reference {reference}" in caplog.text and "secret registry body" in caplog.text


def _fake_api(lines: list[bytes]):
    response = SimpleNamespace(iter_lines=lambda: iter(lines), close=lambda: None)
    return SimpleNamespace(_url=lambda path: path, _post=lambda *a, **k: response,
                           _raise_for_status=lambda r: None)


async def test_dockers_pull_error_body_is_detail_not_message():
    runtime = DockerRuntime()
    body = 'Get "http://10.9.8.7:5000/v2/": dial tcp 10.9.8.7:5000: connect: connection refused'
    runtime._client = SimpleNamespace(api=_fake_api([b'{"status": "Pulling"}', json.dumps({"error": body}).encode()]),
                                      close=lambda: None)
    try:
        with pytest.raises(ImageMissing) as failed:
            await runtime.pull("acme/algo:1")
    finally:
        await runtime.close()
    assert "10.9.8.7" not in str(failed.value) and failed.value.detail == body


# -- against the real daemon --------------------------------------------------------------------------

@pytest.mark.docker
def test_a_local_registry_is_refused_at_submit_and_again_before_any_pull(make_daemon, tmp_path, monkeypatch):
    env = {"id": "ocean-compute", "nCPU": 0.5, "ramGB": 0.25, "diskGB": 0.05,
           "rawAlgorithmImages": [PY_REPO, "127.0.0.1:5000/*", "[::1]:5000/*"]}
    # diskFloorGB this high keeps every job queued, so the policy can change before it runs.
    daemon = make_daemon(imagePull="if-missing", registryAllow=["127.0.0.1"], diskFloorGB=10**9, environments=[env])
    client = daemon.client()
    did = dataset(daemon.assets)
    for image, code in ((BUSYBOX_IMAGE, "image_not_allowed"), ("[::1]:5000/x:y", "registry_not_allowed")):
        with pytest.raises(ApiError) as refused:
            client.start(did, raw("print(1)", image=image), "ocean-compute")
        assert refused.value.status == 400 and refused.value.body["code"] == code, refused.value.body
        assert set(refused.value.body) <= {"error", "code", "field"}
    job_id = client.start(did, raw("print(1)", image="127.0.0.1:5000/x:y"), "ocean-compute")["jobId"]
    deadline = time.time() + 30  # the scheduler looked at it and kept it queued (the disk floor)
    while "new jobs wait in the queue" not in daemon.log() and time.time() < deadline:
        time.sleep(0.1)
    assert "new jobs wait in the queue" in daemon.log()
    assert client.job(job_id)["status"] == 1

    daemon.stop()
    proxy = DockerProxy(str(tmp_path / "docker.sock"), record=True)
    monkeypatch.setenv("DOCKER_HOST", proxy.docker_host)
    daemon.config.update(registryAllow=[], diskFloorGB=0)  # the operator tightened the policy
    daemon.start()
    try:
        job = wait_done(client, job_id, timeout=60)
    finally:
        proxy.down()
    assert job["status"] == 32, job
    assert job["error"] == ("image 127.0.0.1:5000/x:y is refused: its registry host is an IP address "
                            "(registryAllow)")
    assert b"/images/" in proxy.seen  # the proxy did carry the daemon's Docker calls ...
    assert b"/images/create" not in proxy.seen  # ... but no pull, and not even a look-up of that reference:
    assert b"127.0.0.1:5000" not in proxy.seen and b"127.0.0.1%3A5000" not in proxy.seen


def test_the_quick_start_image_is_allowed_by_the_shipped_config_and_the_defaults():
    """README: `runnerd submit --algo-file` with the CLI's default image, against ./environments.yaml."""
    from pathlib import Path

    from runnerd.cli.main import build_parser
    from runnerd.config import load_config

    image = build_parser().parse_args(["submit", "--dataset", "d", "--algo-file", "a"]).image
    shipped = load_config(Path(__file__).resolve().parent.parent / "environments.yaml")
    defaults = parse_config({"environments": [{"id": "e"}]})
    for settings in (shipped, defaults):
        assert imageref.allowed_by(imageref.parse(image), settings.environments[0].rawAlgorithmImages)
        assert imageref.registry_refusal(imageref.parse(image), settings.registryAllow) is None
