"""The algorithm is contained (SPEC §3, issue #7): no network unless allowed by the environment
and every dataset, read-only inputs and root filesystem, non-root, no capabilities — read from
inside the container and from Docker's inspect data. Network checks only ever talk to this machine.
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time

import pytest

from tests.helpers import Daemon, dataset, raw, result_of, wait_done
from tests.netutil import BridgeServer, docker_bridge_ip

pytestmark = pytest.mark.docker

PROBE = """
import json, os, socket
did = json.loads(os.environ["DIDS"])[0]
report = {"uid": os.getuid(), "gid": os.getgid()}
status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines() if ":" in l)
report["CapEff"] = status["CapEff"].strip()
report["NoNewPrivs"] = status["NoNewPrivs"].strip()
report["interfaces"] = sorted(os.listdir("/sys/class/net"))
routes = open("/proc/net/route").read().splitlines()[1:]
report["routes"] = [r.split()[0] for r in routes]
def attempt(fn):
    try:
        fn()
        return "ok"
    except OSError as exc:
        return type(exc).__name__ + ": " + str(exc)
report["write_input"] = attempt(lambda: open(f"/data/inputs/{did}/0", "a").write("x"))
report["write_rootfs"] = attempt(lambda: open("/etc/evil", "w").write("x"))
report["write_tmp"] = attempt(lambda: open("/tmp/ok", "w").write("x"))
report["docker_sock"] = os.path.exists("/var/run/docker.sock")
target = json.load(open("/data/inputs/algoCustomData.json"))
report["connect"] = attempt(lambda: socket.create_connection((target["host"], target["port"]), timeout=3).close())
print(json.dumps(report))
json.dump(report, open("/data/outputs/report.json", "w"))
"""


class Listener:
    """A TCP listener on docker0 that records whether anybody connected."""

    def __init__(self):
        self.host = docker_bridge_ip()
        self.sock = socket.socket()
        self.sock.bind((self.host, 0))
        self.sock.listen(5)
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
                self.connections += 1
                conn.close()
            except OSError:
                continue

    def close(self):
        self._stop = True
        self.thread.join(2)
        self.sock.close()


@pytest.fixture
def listener():
    server = Listener()
    yield server
    server.close()


def _probe(daemon: Daemon, listener: Listener, env: str, network_access: bool):
    did = dataset(daemon.assets, network=network_access)
    client = daemon.client()
    algo = raw(PROBE)
    algo["algocustomdata"] = {"host": listener.host, "port": listener.port}
    job = wait_done(client, client.start(did, algo, env)["jobId"])
    assert job["status"] == 70, (job, daemon.log()[-2000:])
    return json.loads(result_of(client, job, "output", "report.json"))


def test_algorithm_is_contained_by_default(make_daemon, listener):
    daemon = make_daemon()
    report = _probe(daemon, listener, "ocean-compute", network_access=True)
    assert report["uid"] != 0 and report["gid"] != 0
    assert report["CapEff"] == "0000000000000000" and report["NoNewPrivs"] == "1"
    assert report["interfaces"] == ["lo"] and report["routes"] == []
    assert report["connect"] != "ok" and listener.connections == 0
    assert "Permission denied" in report["write_input"]  # root's 0644 pin: refused before the read-only mount
    assert "Read-only file system" in report["write_rootfs"]
    assert report["write_tmp"] == "ok"
    assert report["docker_sock"] is False


def test_network_needs_both_the_environment_and_every_dataset(make_daemon, listener):
    daemon = make_daemon(environments=[
        {"id": "net", "nCPU": 0.5, "ramGB": 0.25, "diskGB": 0.05, "allowNetwork": True},
    ])
    refused = _probe(daemon, listener, "net", network_access=False)
    assert refused["interfaces"] == ["lo"] and listener.connections == 0
    allowed = _probe(daemon, listener, "net", network_access=True)
    assert "eth0" in allowed["interfaces"] and allowed["connect"] == "ok"
    assert listener.connections == 1


def test_inspect_data_shows_the_containment(make_daemon):
    daemon = make_daemon()
    did = dataset(daemon.assets)
    client = daemon.client()
    job_id = client.start(did, raw("import time\nprint('up', flush=True)\ntime.sleep(4)"), "ocean-compute")["jobId"]
    wait_done(client, job_id, statuses={40})
    name = f"runnerd-{job_id}-algorithm"
    for _ in range(50):  # the status is recorded just before the container starts
        out = subprocess.run(["docker", "inspect", name], capture_output=True, text=True)
        if out.returncode == 0 and json.loads(out.stdout)[0]["State"]["Running"]:
            break
        time.sleep(0.1)
    info = json.loads(out.stdout)[0]
    host, config = info["HostConfig"], info["Config"]
    assert host["CapDrop"] == ["ALL"] and not host["CapAdd"]
    assert "no-new-privileges:true" in host["SecurityOpt"]
    assert host["ReadonlyRootfs"] is True and host["Privileged"] is False
    assert host["NetworkMode"] == "none"
    assert host["Memory"] == host["MemorySwap"] == int(0.5 * 1024**3)
    assert host["PidsLimit"] == 512
    assert config["User"] == "65532:65532"
    assert config["Labels"]["runnerd.job"] == job_id and config["Labels"]["runnerd.step"] == "algorithm"
    mounts = {m["Destination"]: m for m in info["Mounts"]}
    assert mounts["/data/inputs"]["RW"] is False and mounts["/data/outputs"]["RW"] is True
    assert all("docker.sock" not in m["Source"] for m in info["Mounts"])
    assert wait_done(client, job_id)["status"] == 70


@pytest.mark.parametrize("where", ["loopback", "docker bridge"])
def test_provision_refuses_local_addresses_before_connecting(make_daemon, where):
    server = BridgeServer("127.0.0.1" if where == "loopback" else None)
    try:
        server.files["/data.csv"] = b"a\n1\n"
        daemon = make_daemon()  # provisionAllow is empty
        did = dataset(daemon.assets, url=server.url("/data.csv"))
        client = daemon.client()
        job = wait_done(client, client.start(did, raw("print(1)"), "ocean-compute")["jobId"])
        assert job["status"] == 31, job
        # The consumer learns that it was refused, not where the operator's data lives (#10):
        # the address, and the hint to allow-list it, are in the daemon's own log.
        assert job["error"] == f"dataset {did} file 0: address not allowed" and server.host not in job["error"]
        assert "provisionAllow" in daemon.log() and server.host in daemon.log()
        assert server.paths == []  # refused before any connection was made
    finally:
        server.close()


def test_provision_fetches_from_an_allow_listed_bridge_address(make_daemon, http_server):
    http_server.files["/data.csv"] = b"a,b\n5,6\n"
    daemon = make_daemon(provisionAllow=[http_server.host])
    did = dataset(daemon.assets, url=http_server.url("/data.csv"))
    client = daemon.client()
    code = "import json, os\nd = json.loads(os.environ['DIDS'])[0]\nprint(open(f'/data/inputs/{d}/0').read())"
    job = wait_done(client, client.start(did, raw(code), "ocean-compute")["jobId"])
    assert job["status"] == 70, job
    assert "5,6" in result_of(client, job, "algorithmLog").decode()
    assert http_server.paths == ["/data.csv"]


@pytest.fixture(scope="module")
def volume_image():
    """An image declaring a VOLUME, built locally from the busybox test image (no registry)."""
    from tests.helpers import BUSYBOX_IMAGE

    name = "runnerd-test-volume:latest"
    dockerfile = f"FROM {BUSYBOX_IMAGE}\nRUN mkdir /fill && chmod 777 /fill\nVOLUME /fill\n"
    subprocess.run(["docker", "build", "-q", "-t", name, "-"], input=dockerfile, text=True, check=True,
                   capture_output=True)
    yield name
    subprocess.run(["docker", "rmi", "-f", name], capture_output=True)


def test_an_image_volume_does_not_escape_the_disk_quota(make_daemon, volume_image):
    daemon = make_daemon(environments=[{"id": "ocean-compute", "nCPU": 0.5, "ramGB": 0.25, "diskGB": 0.05,
                                        "tmpSizeMB": 16}])
    volumes_before = subprocess.run(["docker", "volume", "ls", "-q"], capture_output=True, text=True).stdout.split()
    client = daemon.client()
    code = "dd if=/dev/zero of=/fill/big bs=1M count=100 2>&1; echo rc=$?; grep ' /fill ' /proc/mounts"
    job = wait_done(client, client.start(dataset(daemon.assets), raw(code, image=volume_image,
                                                                     entrypoint="sh $ALGO"), "ocean-compute")["jobId"])
    log = result_of(client, job, "algorithmLog").decode()
    assert "No space left" in log and "rc=1" in log and "tmpfs" in log, log  # a 16 MB tmpfs, not the host disk
    after = subprocess.run(["docker", "volume", "ls", "-q"], capture_output=True, text=True).stdout.split()
    assert set(after) <= set(volumes_before)  # no anonymous volume was created


def test_jobs_that_may_reach_out_share_a_network_without_inter_container_traffic(make_daemon):
    make_daemon()  # creates it on start
    info = json.loads(subprocess.run(["docker", "network", "inspect", "runnerd"], capture_output=True, text=True,
                                     check=True).stdout)[0]
    assert info["Driver"] == "bridge"
    assert info["Options"]["com.docker.network.bridge.enable_icc"] == "false"
