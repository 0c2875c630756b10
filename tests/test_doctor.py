"""`runnerd doctor`: planted faults are reported with their fix and the right exit status.

The command runs as a subprocess, as an operator runs it; the checks are also called directly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from runnerd import doctor
from runnerd.config import parse_config
from tests.helpers import PY_IMAGE, base_config, dataset


def run_doctor(tmp_path: Path, config: dict | None = None, *, data_dir: Path | None = None, json_out: bool = False,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    config_path = tmp_path / "environments.yaml"
    config_path.write_text(yaml.safe_dump(config if config is not None else base_config()))
    argv = [sys.executable, "-m", "runnerd", "doctor", "--config", str(config_path),
            "--data-dir", str(data_dir or tmp_path / "data"), "--assets", str(tmp_path / "assets")]
    if json_out:
        argv.append("--json")
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})})
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def lines_for(output: str, status: str, check: str) -> list[tuple[str, str]]:
    """(line, the fix line under it) for each `STATUS  check: …` line."""
    lines = output.splitlines()
    found = []
    for i, line in enumerate(lines):
        if line.startswith(f"{status:<4}  {check}: "):
            fix = lines[i + 1].strip() if i + 1 < len(lines) and lines[i + 1].startswith("      fix: ") else ""
            found.append((line, fix))
    return found


def settings(**overrides):
    return parse_config(base_config(**overrides))


# -- the command ------------------------------------------------------------------------------

@pytest.mark.docker
def test_healthy_host_exits_0(tmp_path):
    dataset(tmp_path / "assets")
    proc = run_doctor(tmp_path)
    assert proc.returncode == 0, proc.stdout
    assert "FAIL" not in proc.stdout
    for check in ("config", "docker", "cgroups", "helper image", "gpus", "data dir", "disk", "disk quota", "assets"):
        assert lines_for(proc.stdout, "OK", check), f"no OK line for {check}:\n{proc.stdout}"
    assert lines_for(proc.stdout, "OK", "helper image")[0][0].endswith(f"{PY_IMAGE} is present")
    assert lines_for(proc.stdout, "OK", "gpus")[0][0].endswith("no GPUs configured")
    assert (tmp_path / "data").is_dir() and list((tmp_path / "data").iterdir()) == []  # probe file removed

    proc = run_doctor(tmp_path, json_out=True)
    assert proc.returncode == 0
    results = json.loads(proc.stdout)
    assert all(set(r) == {"check", "status", "detail", "fix"} for r in results)
    assert {r["status"] for r in results} <= {"OK", "WARN"}
    assert any(r["check"] == "docker" and r["status"] == "OK" for r in results)


def test_docker_unreachable_fails_with_fix(tmp_path):
    proc = run_doctor(tmp_path, env={"DOCKER_HOST": "unix:///nonexistent.sock"})
    assert proc.returncode == 1
    [(line, fix)] = lines_for(proc.stdout, "FAIL", "docker")
    assert "unix:///nonexistent.sock" in line
    assert "DOCKER_HOST" in fix and "docker.io" in fix
    # what needs Docker is reported as not checked, not as passing
    assert lines_for(proc.stdout, "WARN", "helper image")

    results = json.loads(run_doctor(tmp_path, json_out=True, env={"DOCKER_HOST": "unix:///nonexistent.sock"}).stdout)
    docker_result = next(r for r in results if r["check"] == "docker")
    assert docker_result["status"] == "FAIL" and "DOCKER_HOST" in docker_result["fix"]


@pytest.mark.docker
def test_missing_helper_image_fails_when_imagepull_is_never(tmp_path):
    proc = run_doctor(tmp_path, base_config(helperImage="runnerd-no-such-image:0", imagePull="never"))
    assert proc.returncode == 1
    [(line, fix)] = lines_for(proc.stdout, "FAIL", "helper image")
    assert "runnerd-no-such-image:0" in line and "imagePull is never" in line
    assert "docker pull runnerd-no-such-image:0" in fix
    assert "bash scripts/images.sh python runnerd-no-such-image:0" in fix


def test_unwritable_data_dir_fails_with_fix(tmp_path):
    (tmp_path / "afile").write_text("a regular file, so nothing can be created below it (even by root)")
    data_dir = tmp_path / "afile" / "data"
    proc = run_doctor(tmp_path, data_dir=data_dir)
    assert proc.returncode == 1
    [(line, fix)] = lines_for(proc.stdout, "FAIL", "data dir")
    assert str(data_dir) in line and "not writable" in line
    assert "--data-dir" in fix and "RUNNERD_DATA_DIR" in fix


@pytest.mark.docker
def test_malformed_ddo_is_a_warning(tmp_path):
    dataset(tmp_path / "assets")
    (tmp_path / "assets" / "broken.json").write_text("{not json")
    (tmp_path / "assets" / "wrong-id.json").write_text(json.dumps({"id": "did:op:short", "metadata": {}}))
    proc = run_doctor(tmp_path)
    assert proc.returncode == 0, proc.stdout  # a warning, not a failure: the other assets still load
    warnings = lines_for(proc.stdout, "WARN", "assets")
    assert sorted(name for name in ("broken.json", "wrong-id.json") for line, _ in warnings if name in line) == \
        ["broken.json", "wrong-id.json"]
    assert all("runnerd assets list" in fix for _, fix in warnings)
    assert lines_for(proc.stdout, "OK", "assets")[0][0].startswith("OK    assets: 1 asset(s)")


def test_bad_config_names_the_key(tmp_path):
    config = base_config()
    config["environments"][0]["ramGB"] = -1
    proc = run_doctor(tmp_path, config)
    assert proc.returncode == 1
    [(line, fix)] = lines_for(proc.stdout, "FAIL", "config")
    assert "environments[0].ramGB" in line
    assert "runnerd check-config" in fix


# -- the checks, called directly --------------------------------------------------------------

def test_check_config_and_data_dir(tmp_path):
    result, loaded = doctor.check_config(tmp_path / "missing.yaml")
    assert result.status == "FAIL" and loaded is None and "RUNNERD_CONFIG" in result.detail
    (tmp_path / "afile").write_text("")
    assert doctor.check_data_dir(tmp_path / "afile" / "data").status == "FAIL"
    ok = doctor.check_data_dir(tmp_path / "new" / "data")
    assert ok.status == "OK" and (tmp_path / "new" / "data").is_dir()


def test_check_cgroups_v2_missing_controllers_and_docker_warnings(tmp_path):
    (tmp_path / "cgroup.controllers").write_text("cpu io memory\n")
    info = {"Warnings": ["WARNING: No swap limit support"], "MemoryLimit": True, "PidsLimit": True}
    results = doctor.check_cgroups(info, root=tmp_path)
    [cgroups] = [r for r in results if r.check == "cgroups"]
    assert cgroups.status == "FAIL" and "pids, cpuset" in cgroups.detail and "v2" in cgroups.detail
    [warning] = [r for r in results if r.check == "docker warnings"]
    assert warning.status == "WARN" and "No swap limit support" in warning.detail
    assert "swapaccount=1" in warning.fix and "systemd.unified_cgroup_hierarchy" in warning.fix

    for name in doctor.CONTROLLERS:  # cgroup v1: one folder per controller
        (tmp_path / "v1" / name).mkdir(parents=True)
    results = doctor.check_cgroups({"Warnings": None, "CpuCfsQuota": False}, root=tmp_path / "v1")
    assert [(r.status, "v1" in r.detail) for r in results if r.check == "cgroups"] == [("OK", True), ("FAIL", False)]


def test_check_helper_image_warns_when_it_can_be_pulled():
    class Runtime:  # stands in for Docker (the real one is used in the docker tests)
        async def has_image(self, ref):
            return False

    runtime = Runtime()
    result = doctor.check_helper_image(runtime, settings(helperImage="runnerd-no-such-image:0", imagePull="if-missing"))
    assert result.status == "WARN" and "docker pull runnerd-no-such-image:0" in result.fix
    result = doctor.check_helper_image(runtime, settings(helperImage="runnerd-no-such-image:0", imagePull="never"))
    assert result.status == "FAIL"


def _nvidia_smi(stdout: str = "", missing: bool = False):
    def run(argv, **kwargs):
        assert argv == ["nvidia-smi", "-L"]
        if missing:
            raise FileNotFoundError("nvidia-smi")
        return subprocess.CompletedProcess(argv, 0, stdout, "")
    return run


def test_check_gpus():
    assert [(r.status, r.detail) for r in doctor.check_gpus(settings(), None)] == [("OK", "no GPUs configured")]
    gpu_env = settings(environments=[{"id": "gpu", "gpus": ["0", "GPU-1234"], "nGPU": 1}])
    [missing] = doctor.check_gpus(gpu_env, {}, run=_nvidia_smi(missing=True))
    assert missing.status == "FAIL" and "nvidia-smi" in missing.detail
    listing = "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1234)\n"
    results = doctor.check_gpus(gpu_env, {"Runtimes": {"nvidia": {}, "runc": {}}}, run=_nvidia_smi(listing))
    assert [(r.check, r.status) for r in results] == [("gpus", "OK"), ("gpu runtime", "OK")]
    other = settings(environments=[{"id": "gpu", "gpus": ["1"], "nGPU": 1}])
    results = doctor.check_gpus(other, {"Runtimes": {"nvidia": {}}}, run=_nvidia_smi(listing))
    assert results[0].status == "FAIL" and "1 (environment gpu)" in results[0].detail
    assert "nvidia-smi -L" in results[0].fix


def test_check_disk_warns_below_floor_and_below_what_jobs_need(tmp_path):
    results = doctor.check_disk(tmp_path, settings(diskFloorGB=10**9))
    assert [r.status for r in results] == ["WARN"] and "diskFloorGB" in results[0].fix
    huge = settings(environments=[{"id": "big", "diskGB": 10**8, "maxJobs": 3}])
    [result] = doctor.check_disk(tmp_path, huge)
    assert result.status == "WARN" and "big" in result.detail and "maxJobs" in result.fix
    assert doctor.check_disk(tmp_path / "not" / "yet", settings())[0].status == "OK"


def test_check_disk_quota(tmp_path):
    loop = settings()
    results = doctor.check_disk_quota(loop, euid=1000, which=lambda name: None, loop_control=tmp_path / "none")
    fixes = " | ".join(r.fix for r in results)
    assert {r.status for r in results} == {"FAIL"} and len(results) == 4
    assert "run runnerd as root" in fixes and "e2fsprogs" in fixes and "modprobe loop" in fixes
    assert all("diskQuota: tmpfs" in r.fix for r in results)
    ok = doctor.check_disk_quota(loop, euid=0, which=lambda name: f"/usr/bin/{name}", loop_control=tmp_path)
    assert [r.status for r in ok] == ["OK"]
    none = settings(environments=[{"id": "soft", "diskQuota": "none"}])
    assert [r.status for r in doctor.check_disk_quota(none, euid=1000)] == ["WARN"]


def test_check_assets_reports_each_malformed_ddo(tmp_path):
    assets = tmp_path / "assets"
    assert [r.status for r in doctor.check_assets(assets)] == ["WARN"]  # no catalog yet
    dataset(assets)
    (assets / "bad.json").write_text("[]")
    results = doctor.check_assets(assets)
    assert [r.status for r in results] == ["WARN", "OK"] and "bad.json" in results[0].detail


def test_exit_status_and_text_format():
    results = [doctor.Result("a", "OK", "fine", "unused"), doctor.Result("b", "WARN", "hmm", "do x"),
               doctor.Result("c", "FAIL", "broken", "do y")]
    assert doctor.exit_status(results[:2]) == 0 and doctor.exit_status(results) == 1
    assert doctor.format_results(results).splitlines() == [
        "OK    a: fine", "WARN  b: hmm", "      fix: do x", "FAIL  c: broken", "      fix: do y"]


def test_a_job_user_that_is_a_host_user_is_warned_about():
    results = doctor.check_isolation(settings(jobUser="1:1"), {"SecurityOptions": ["name=seccomp"]})
    assert [(r.check, r.status) for r in results] == [("job user", "WARN")]  # uid 1 is `daemon` on Debian
    assert "65532" in results[0].fix
    results = doctor.check_isolation(settings(jobUser="65532:65532"), {"SecurityOptions": ["name=userns"]})
    assert [(r.check, r.status) for r in results] == [("job user", "OK"), ("docker userns", "WARN")]


def test_live_restore_is_reported_with_what_it_means_for_running_jobs():
    off = doctor.check_live_restore({"LiveRestoreEnabled": False})
    assert off.status == "WARN" and "76" in off.detail and "live-restore" in off.fix
    assert doctor.check_live_restore({"LiveRestoreEnabled": True}).status == "OK"
    assert doctor.check_live_restore(None).status == "WARN"  # not checked, not passing


def test_environments_larger_than_the_host_are_reported():
    host = {"NCPU": 2, "MemTotal": 4 * 1024**3}
    assert [r.status for r in doctor.check_host_capacity(settings(), host)] == ["OK"]
    big = settings(environments=[{"id": "wide", "nCPU": 3}, {"id": "fat", "ramGB": 8}])
    results = doctor.check_host_capacity(big, host)
    assert [(r.status, r.detail.split("'")[1]) for r in results] == [("FAIL", "wide"), ("WARN", "fat")]
    assert "at most 2" in results[0].fix


def test_every_check_doctor_can_print_is_in_the_operator_guide():
    import re

    source = (Path(doctor.__file__)).read_text()
    names = set(re.findall(r'(?:Result|_skipped)\("([a-z][a-z -]*)"', source))
    assert {"docker", "host capacity", "docker live-restore"} <= names
    section = (Path(__file__).resolve().parent.parent / "docs" / "operator-guide.md").read_text()
    section = section.split("## Doctor", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"`([a-z][a-z -]*)`", section))
    assert sorted(names - documented) == []
