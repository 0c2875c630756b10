"""Backends declare their capabilities (#17): an environment whose keys promise a guarantee the
configured backend lacks is refused by `runnerd check-config`, `runnerd doctor` and `serve`, naming
the key; nothing is weakened silently. No Docker and no lab needed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from runnerd import doctor
from runnerd.config import ConfigError, parse_config
from runnerd.containers.capabilities import (
    LOCAL_DOCKER,
    SWARM,
    Capabilities,
    Capability,
    needs,
    refusals,
)

REPO = Path(__file__).resolve().parent.parent
SWARM_OK = {"diskQuota": "tmpfs", "diskGB": 1}  # the environment a swarm can keep every promise of
SITE_URL = "http://10.231.0.1:8030"  # where the lab's workers reach runnerd
SWARM_CONFIG = {"backend": "swarm", "siteURL": SITE_URL}


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "runnerd", *args], capture_output=True, text=True, timeout=60,
                          cwd=REPO)


def write(tmp_path: Path, backend: str, *envs: dict) -> Path:
    path = tmp_path / "environments.yaml"
    doc = {"backend": backend, "environments": [{"id": f"e{i}", **e} for i, e in enumerate(envs)],
           **({"siteURL": SITE_URL} if backend == "swarm" else {})}
    path.write_text(yaml.safe_dump(doc))
    return path


def test_every_backend_declares_every_capability_with_a_reason():
    for caps in (LOCAL_DOCKER, SWARM):
        assert set(caps.how) | set(caps.why_not) == set(Capability)
        assert all(text.strip() for text in [*caps.how.values(), *caps.why_not.values()])
    assert LOCAL_DOCKER.why_not == {}  # the local backend is the reference: it has them all
    # Swarm's known gaps (docs/architecture-swarm.md), declared rather than discovered
    assert {Capability.NETWORK_NONE, Capability.OOM_FLAG, Capability.CPUSET, Capability.OCI_RUNTIME,
            Capability.GPU_DEVICES, Capability.LOOP_QUOTA, Capability.HOST_MOUNTS} <= set(SWARM.why_not)
    assert Capability.NO_ROUTE_OUT in SWARM and Capability.NETWORK_NONE not in SWARM
    with pytest.raises(AssertionError):
        Capabilities("half", how={Capability.CPUSET: "x"})


def test_what_an_environment_needs_follows_its_keys():
    plain = parse_config({"environments": [{"id": "a"}]}).environments[0]
    assert dict((c, k) for k, c in needs(plain)) == {
        Capability.NO_ROUTE_OUT: "allowNetwork", Capability.NO_SWAP: "ramGB", Capability.LOOP_QUOTA: "diskQuota"}
    rich = parse_config({"environments": [{"id": "b", "runtime": "runsc", "gpus": ["0"], "nGPU": 1,
                                           "diskQuota": "tmpfs", "diskGB": 1}]}).environments[0]
    assert {c for _, c in needs(rich)} == {Capability.NO_ROUTE_OUT, Capability.NO_SWAP, Capability.OCI_RUNTIME,
                                            Capability.GPU_DEVICES, Capability.TMPFS_QUOTA}


def test_the_local_backend_refuses_nothing_the_keys_can_ask():
    settings = parse_config({"environments": [
        {"id": "a", "runtime": "runsc", "gpus": ["0"], "nGPU": 1},
        {"id": "b", "diskQuota": "tmpfs", "diskGB": 1, "allowNetwork": True}]})
    assert settings.backend == "docker"  # the default: this host's Docker
    assert refusals(settings) == []


def test_swarm_refuses_each_key_it_cannot_keep_and_names_it():
    settings = parse_config({**SWARM_CONFIG, "environments": [
        {"id": "ok", **SWARM_OK},
        {"id": "gvisor", "runtime": "runsc", **SWARM_OK},
        {"id": "gpu", "gpus": ["GPU-1"], "nGPU": 1, **SWARM_OK},
        {"id": "loop"}]})
    found = {(r.path, r.capability) for r in refusals(settings)}
    assert found == {("environments[1].runtime", Capability.OCI_RUNTIME),
                     ("environments[2].gpus", Capability.GPU_DEVICES),
                     ("environments[3].diskQuota", Capability.LOOP_QUOTA)}
    text = str(next(r for r in refusals(settings) if r.capability is Capability.OCI_RUNTIME))
    assert text.startswith("environments[1].runtime: needs oci_runtime, which the swarm backend lacks: ")


def test_check_config_refuses_an_environment_the_swarm_cannot_keep(tmp_path):
    bad = run_cli("check-config", str(write(tmp_path, "swarm", SWARM_OK, {"runtime": "runsc", **SWARM_OK})))
    assert bad.returncode == 2, bad.stdout
    assert "environments[1].runtime: needs oci_runtime, which the swarm backend lacks" in bad.stderr
    assert "environments[0]" not in bad.stderr and "Traceback" not in bad.stderr
    good = run_cli("check-config", str(write(tmp_path, "swarm", SWARM_OK)))
    assert good.returncode == 0, good.stderr
    # the same environment on this host's Docker is fine
    local = run_cli("check-config", str(write(tmp_path, "docker", {"runtime": "runsc"})))
    assert local.returncode == 0, local.stderr


def test_doctor_fails_the_backend_check_naming_the_key():
    settings = parse_config({**SWARM_CONFIG, "environments": [{"id": "loop"}, {"id": "ok", **SWARM_OK}]})
    (result,) = [r for r in doctor.check_backend(settings, _Manager()) if r.check == "backend"]
    assert result.status == doctor.FAIL
    assert result.detail.startswith("environments[0].diskQuota: needs loop_quota")
    assert "loop_quota" in result.fix
    (ok,) = doctor.check_backend(parse_config({"environments": [{"id": "a"}]}))
    assert ok.status == doctor.OK and "docker" in ok.detail
    (swarm_ok,) = [r for r in doctor.check_backend(parse_config({**SWARM_CONFIG, "environments": [
        {"id": "a", **SWARM_OK}]}), _Manager()) if r.check == "backend"]
    assert swarm_ok.status == doctor.OK and "oom_flag" in swarm_ok.detail  # what it reports less precisely


def test_serve_refuses_an_environment_the_swarm_cannot_keep(tmp_path):
    refused = run_cli("serve", "--config", str(write(tmp_path, "swarm", {})), "--data-dir", str(tmp_path / "d"),
                      "--assets", str(tmp_path / "a"), "--port", "0")
    assert refused.returncode == 2 and "environments[0].diskQuota: needs loop_quota" in refused.stderr


def test_a_swarm_backend_needs_the_url_its_workers_reach_runnerd_at():
    with pytest.raises(ConfigError, match="siteURL: is required with backend: swarm"):
        parse_config({"backend": "swarm", "environments": [{"id": "a", **SWARM_OK}]})
    with pytest.raises(ConfigError, match="siteURL: must start with http"):
        parse_config({"backend": "swarm", "siteURL": "10.0.0.5:8030", "environments": [{"id": "a", **SWARM_OK}]})


class _Manager:
    def __init__(self, nodes=None, down: bool = False):
        self._nodes, self.down, self.closed = nodes or [], down, False

    async def ping(self) -> str:
        if self.down:
            from runnerd.errors import RuntimeUnavailable

            raise RuntimeUnavailable("this Docker is not a swarm manager")
        return "20.10.24"

    async def nodes(self) -> list:
        return self._nodes

    async def close(self) -> None:
        self.closed = True


def _node(node_id: str, cpus: float, gb: float, swap: str | None = "off") -> dict:
    return {"id": node_id, "hostname": f"host-{node_id}", "cpus": cpus, "memory": int(gb * 1024**3),
            "labels": {"runnerd.swap": swap} if swap else {}}


def test_doctor_checks_the_swarm_manager_and_that_every_environment_fits_a_node():
    settings = parse_config({**SWARM_CONFIG, "environments": [{"id": "small", **SWARM_OK},
                                                               {"id": "big", **SWARM_OK, "nCPU": 8}]})
    fits = parse_config({**SWARM_CONFIG, "environments": [{"id": "small", **SWARM_OK}]})
    good = _Manager([_node("a", 2, 8), _node("b", 2, 8, swap=None)])
    (ok,) = [r for r in doctor.check_backend(fits, good) if r.check == "swarm"]
    assert ok.status == doctor.OK and "1 of 2 Ready, active node(s) labelled runnerd.swap=off" in ok.detail
    assert good.closed
    (big,) = [r for r in doctor.check_backend(settings, _Manager([_node("a", 2, 8)])) if r.check == "swarm"]
    assert big.status == doctor.FAIL and big.detail.startswith("environment big: one job needs 8 CPUs")
    (down,) = [r for r in doctor.check_backend(fits, _Manager(down=True)) if r.check == "swarm"]
    assert down.status == doctor.FAIL and "not a swarm manager" in down.detail and "swarmManager" in down.fix
    assert [r for r in doctor.check_backend(parse_config({"environments": [{"id": "a"}]})) if r.check == "swarm"] == []
