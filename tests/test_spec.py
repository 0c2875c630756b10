"""The containment rules of SPEC §3 as they appear in the container specs (runnerd/containers/spec.py),
their translation to Docker's host config (docker_runtime.to_sdk_kwargs), and the scheduler's
Allocator (cores and GPUs). All pure: no Docker daemon is contacted."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import docker
import pytest

from runnerd import layout
from runnerd.catalog import Catalog
from runnerd.config import parse_config
from runnerd.containers import spec as specs
from runnerd.containers.docker_runtime import to_sdk_kwargs
from runnerd.containers.runtime import LABEL_JOB, LABEL_STEP, ContainerSpec
from runnerd.domain import JobPlan, PlannedJob, RemoteFile, Slot, StepKind
from runnerd.engine.intake import Intake
from runnerd.engine.pins import pin_all
from runnerd.engine.scheduler import Allocator
from runnerd.layout import JobPaths
from tests.helpers import algorithm_asset, dataset

OWNER = "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23"


def settings_for(**env_overrides):
    env = {"id": "env", "nCPU": 2, "ramGB": 0.5, "diskGB": 0.1, "tmpSizeMB": 32, "shmSizeMB": 16,
           "pidsLimit": 100, "nofileLimit": 2048, "maxLogMB": 1, "rawAlgorithmImages": ["*"]}
    env.update(env_overrides)
    return parse_config({"jobUser": "1234:5678", "helperImage": "helper-img:3", "environments": [env]})


def raw_algorithm(entrypoint="python3 $ALGO", image="repo/algo", tag="1.0", checksum=""):
    return {"meta": {"rawcode": "print('hi')", "container": {"entrypoint": entrypoint, "image": image, "tag": tag,
                                                              "checksum": checksum}},
            "algocustomdata": {"k": 1}}


def build_job(assets: Path, settings, *, algorithm=None, datasets: list[str] | None = None) -> PlannedJob:
    """A Job exactly as the engine's Intake builds it from a start request."""
    if datasets is None:
        datasets = [dataset(assets)]
    params = {
        "environment": settings.environments[0].id,
        "dataset": {"documentId": datasets[0], "serviceId": "compute", "transferTxId": "0xorder"},
        "additionalDatasets": [{"documentId": d, "serviceId": "compute"} for d in datasets[1:]],
        "algorithm": algorithm or raw_algorithm(),
    }
    return Intake(settings, Catalog(assets)).build(params, OWNER)


@pytest.fixture
def paths(tmp_path) -> JobPaths:
    return JobPaths.for_job(tmp_path / "data", "f" * 32)


def mounts_by_target(spec: ContainerSpec) -> dict[str, tuple[str, bool]]:
    targets = [m.target for m in spec.mounts]
    assert len(targets) == len(set(targets)), f"a target is mounted twice: {targets}"
    return {m.target: (m.source, m.read_only) for m in spec.mounts}


def host_config(spec: ContainerSpec) -> dict:
    """What Docker would receive: the SDK's own create_host_config (pure; no connection is made)."""
    api = docker.APIClient(base_url="unix:///nonexistent/docker.sock", version="1.43")
    return api.create_host_config(**to_sdk_kwargs(spec))


def assert_no_docker_socket(spec: ContainerSpec) -> None:
    for m in spec.mounts:
        assert "docker.sock" not in m.source and "docker.sock" not in m.target, m
        assert m.source not in ("/", "/var/run", "/run", "/var/lib/docker"), m


# ------------------------------------------------------------------------------ algorithm spec


def test_algorithm_spec_containment(tmp_assets, paths):
    settings = settings_for()
    env = settings.environments[0]
    job = build_job(tmp_assets, settings)
    spec = specs.build_algorithm(job, env, settings, paths, "repo/algo:1.0", Slot("2,3", ()))
    assert spec.name == f"runnerd-{job.job_id}-algorithm"
    assert spec.image == "repo/algo:1.0"
    assert spec.user == "1234:5678"
    assert spec.read_only_rootfs is True
    assert spec.tmpfs == {"/tmp": "rw,nosuid,nodev,size=32m,mode=1777"}
    assert spec.network == "none"
    assert spec.memory_bytes == 512 * 1024**2
    assert spec.nano_cpus == 2_000_000_000
    assert spec.cpuset == "2,3"
    assert spec.pids_limit == 100 and spec.nofile == 2048
    assert spec.shm_bytes == 16 * 1024**2
    assert spec.cap_add == ()
    assert spec.gpu_device_ids == ()
    assert spec.labels == {LABEL_JOB: job.job_id, LABEL_STEP: "algorithm"}
    assert spec.runtime is None
    assert_no_docker_socket(spec)

    kw = to_sdk_kwargs(spec)
    assert kw["mem_limit"] == kw["memswap_limit"] == 512 * 1024**2
    assert kw["nano_cpus"] == 2_000_000_000 and kw["cpuset_cpus"] == "2,3"
    assert kw["cap_drop"] == ["ALL"] and kw["cap_add"] is None
    assert kw["security_opt"] == ["no-new-privileges:true"]
    assert kw["read_only"] is True and kw["network_mode"] == "none"
    assert kw["pids_limit"] == 100 and kw["shm_size"] == 16 * 1024**2
    assert [(u.name, u.soft, u.hard) for u in kw["ulimits"]] == [("nofile", 2048, 2048)]
    assert "device_requests" not in kw and "runtime" not in kw
    assert spec.env["NVIDIA_VISIBLE_DEVICES"] == "void"  # an nvidia default runtime hands out no GPU
    assert spec.working_dir is None  # the image's own WORKDIR, as Ocean's operator does
    assert kw["restart_policy"] == {"Name": "no"}

    hc = host_config(spec)
    assert hc["Memory"] == hc["MemorySwap"] == 512 * 1024**2
    assert hc["CapDrop"] == ["ALL"] and "CapAdd" not in hc
    assert hc["SecurityOpt"] == ["no-new-privileges:true"]
    assert hc["ReadonlyRootfs"] is True and hc["NetworkMode"] == "none"
    assert hc["Tmpfs"] == {"/tmp": "rw,nosuid,nodev,size=32m,mode=1777"}
    assert hc["CpusetCpus"] == "2,3" and hc["PidsLimit"] == 100
    assert not hc.get("Privileged") and "Binds" not in hc
    assert all(m["Type"] == "bind" for m in hc["Mounts"])


def test_algorithm_mounts(tmp_assets, paths):
    settings = settings_for()
    d0 = dataset(tmp_assets, b"first")
    d1 = dataset(tmp_assets, b"second")
    job = build_job(tmp_assets, settings, datasets=[d0, d1])
    spec = specs.build_algorithm(job, settings.environments[0], settings, paths, "img:1", Slot())
    mounts = mounts_by_target(spec)
    fs = paths.fs
    assert mounts["/data/inputs"] == (str(fs / "inputs"), True)
    assert mounts["/data/ddos"] == (str(fs / "ddos"), True)
    assert mounts["/data/transformations"] == (str(fs / "transformations"), True)
    assert mounts["/data/outputs"] == (str(fs / "outputs"), False)
    assert mounts["/data/logs"] == (str(fs / "logs"), False)
    # local files are mounted from the job's pins (engine/pins.py), never from the asset's path
    paths.root.mkdir(parents=True)
    pin_all(job, paths, 1234, 5678)
    for i, (did, content) in enumerate(((d0, b"first"), (d1, b"second"))):
        source, read_only = mounts[f"/data/inputs/{did.removeprefix('did:op:')}/0"]
        assert read_only and source == str(paths.pinned_input(i, 0)) and Path(source).read_bytes() == content
    # nothing else is mounted: a raw algorithm's code is written into the job's own filesystem
    assert len(mounts) == 7
    # every read-write mount lies inside the job's own folder
    for target, (source, read_only) in mounts.items():
        if not read_only:
            assert Path(source).is_relative_to(paths.root), target
    hc = host_config(spec)
    assert {(m["Target"], m["ReadOnly"]) for m in hc["Mounts"]} == {(t, ro) for t, (_, ro) in mounts.items()}


def test_published_algorithm_file_is_bind_mounted_read_only(tmp_assets, paths):
    settings = settings_for()
    algo_did = algorithm_asset(tmp_assets, "print('published')", entrypoint="python3 $ALGO --flag",
                               image="repo/algo:2")
    job = build_job(tmp_assets, settings, algorithm={"documentId": algo_did, "serviceId": "access"})
    spec = specs.build_algorithm(job, settings.environments[0], settings, paths, "repo/algo:2", Slot())
    source, read_only = mounts_by_target(spec)[layout.ALGORITHM]
    paths.root.mkdir(parents=True)
    pin_all(job, paths, 1234, 5678)
    assert read_only and source == str(paths.pinned_algorithm) and Path(source).read_text() == "print('published')"
    assert spec.entrypoint == ["python3"] and spec.command == [layout.ALGORITHM, "--flag"]
    assert spec.env["TRANSFORMATION_DID"] == algo_did.removeprefix("did:op:")
    assert_no_docker_socket(spec)


def test_algorithm_env_vars(tmp_assets, paths):
    settings = settings_for()
    d0, d1 = dataset(tmp_assets), dataset(tmp_assets)
    job = build_job(tmp_assets, settings, datasets=[d0, d1])
    spec = specs.build_algorithm(job, settings.environments[0], settings, paths, "img:1", Slot())
    env = spec.env
    assert json.loads(env["DIDS"]) == [d0.removeprefix("did:op:"), d1.removeprefix("did:op:")]
    assert env["TRANSFORMATION_DID"] == ""  # a raw algorithm has no DID
    assert env["VOLUME"] == "/data" and env["INPUTS"] == "/data/inputs"
    assert env["OUTPUTS"] == "/data/outputs" and env["LOGS"] == "/data/logs"
    assert env["HOME"] == "/tmp"
    assert env["secret"] == job.plan.secret and len(env["secret"]) >= 16
    other = build_job(tmp_assets, settings, datasets=[d0])
    assert other.plan.secret != job.plan.secret  # random per job


def test_writable_rootfs_caps_gpus_and_runtime_when_the_environment_relaxes_them(tmp_assets, paths):
    settings = settings_for(readOnlyRootfs=False, capAdd=["SYS_PTRACE", "NET_BIND_SERVICE"],
                            gpus=["GPU-a", "GPU-b", "GPU-c"], nGPU=2, runtime="runsc")
    env = settings.environments[0]
    job = build_job(tmp_assets, settings)
    spec = specs.build_algorithm(job, env, settings, paths, "img:1", Slot(None, ("GPU-b", "GPU-c")))
    assert spec.read_only_rootfs is False
    assert spec.cap_add == ("SYS_PTRACE", "NET_BIND_SERVICE")
    assert spec.gpu_device_ids == ("GPU-b", "GPU-c")
    assert "NVIDIA_VISIBLE_DEVICES" not in spec.env  # the device request decides which GPUs
    assert spec.cpuset is None
    kw = to_sdk_kwargs(spec)
    assert kw["read_only"] is False
    assert kw["cap_drop"] == ["ALL"] and kw["cap_add"] == ["SYS_PTRACE", "NET_BIND_SERVICE"]
    assert kw["security_opt"] == ["no-new-privileges:true"]
    assert "cpuset_cpus" not in kw
    (request,) = kw["device_requests"]
    assert request["DeviceIDs"] == ["GPU-b", "GPU-c"]  # exactly the slot's devices, never "all"
    assert request["Capabilities"] == [["gpu"]]
    assert request["Count"] == 0
    assert kw["runtime"] == "runsc"
    hc = host_config(spec)
    assert hc["DeviceRequests"][0]["DeviceIDs"] == ["GPU-b", "GPU-c"]
    assert hc["CapAdd"] == ["SYS_PTRACE", "NET_BIND_SERVICE"]


@pytest.mark.parametrize("runtime, own_kernel", [("runsc", True), ("runsc-kvm", True), ("/usr/bin/runsc", True),
                                                 ("", False), ("crun", False), ("nvidia", False)])
def test_under_gvisor_pids_limit_is_the_sandboxs_nproc_and_the_host_limit_a_backstop(tmp_assets, paths, runtime,
                                                                                       own_kernel):
    """runsc (#13): Docker's pids limit counts gVisor's own host tasks, and a sandbox that hits it
    dies; so pidsLimit becomes RLIMIT_NPROC (gVisor's kernel enforces it per sandbox). Never under
    runc, where RLIMIT_NPROC would count every job of jobUser on the host together."""
    settings = settings_for(runtime=runtime)
    spec = specs.build_algorithm(build_job(tmp_assets, settings), settings.environments[0], settings, paths,
                                 "img:1", Slot(None, ()))
    ulimits = {u.name: (u.soft, u.hard) for u in to_sdk_kwargs(spec)["ulimits"]}
    if own_kernel:
        assert spec.nproc == 100 and ulimits["nproc"] == (100, 100)
        assert spec.pids_limit == 100 * specs.GVISOR_HOST_PIDS_PER_TASK + specs.GVISOR_HOST_PIDS_BASE
    else:
        assert spec.nproc is None and "nproc" not in ulimits and spec.pids_limit == 100
    assert ulimits["nofile"] == (2048, 2048)


@pytest.mark.parametrize("env_allows, dataset_allows, expected", [
    (False, False, "none"),
    (False, True, "none"),
    (True, False, "none"),
    (True, True, "runnerd"),
])
def test_algorithm_network_needs_environment_and_every_input(tmp_assets, paths, env_allows, dataset_allows,
                                                              expected):
    settings = settings_for(allowNetwork=env_allows)
    job = build_job(tmp_assets, settings, datasets=[dataset(tmp_assets, network=dataset_allows)])
    assert job.plan.network is (env_allows and dataset_allows)
    spec = specs.build_algorithm(job, settings.environments[0], settings, paths, "img:1", Slot())
    assert spec.network == expected
    assert to_sdk_kwargs(spec)["network_mode"] == expected


def test_one_input_without_network_keeps_the_algorithm_offline(tmp_assets, paths):
    settings = settings_for(allowNetwork=True)
    job = build_job(tmp_assets, settings,
                    datasets=[dataset(tmp_assets, network=True), dataset(tmp_assets, network=False)])
    spec = specs.build_algorithm(job, settings.environments[0], settings, paths, "img:1", Slot())
    assert spec.network == "none"


def test_network_follows_the_job_spec_flag(tmp_assets, paths):
    settings = settings_for(allowNetwork=False)
    job = build_job(tmp_assets, settings)
    env = settings.environments[0]
    job = job.with_plan(replace(job.plan, network=True))
    assert specs.build_algorithm(job, env, settings, paths, "img:1", Slot()).network == "runnerd"
    job = job.with_plan(replace(job.plan, network=False))
    assert specs.build_algorithm(job, env, settings, paths, "img:1", Slot()).network == "none"
    stored = json.loads(job.with_plan(replace(job.plan, network=True)).plan.to_json())
    del stored["network"]  # a plan stored without the flag never has the network
    job = job.with_plan(JobPlan.from_json(json.dumps(stored)))
    assert specs.build_algorithm(job, env, settings, paths, "img:1", Slot()).network == "none"


@pytest.mark.parametrize("entrypoint, argv", [
    ("python3 $ALGO", ["python3", "/data/transformations/algorithm"]),
    ('python3 $ALGO --name "a b"', ["python3", "/data/transformations/algorithm", "--name", "a b"]),
    ("node $ALGO 'x y' z", ["node", "/data/transformations/algorithm", "x y", "z"]),
    ("$ALGO", ["/data/transformations/algorithm"]),
    ("sh -c 'cat $ALGO | wc -l'", ["sh", "-c", "cat /data/transformations/algorithm | wc -l"]),
    ("python3 -u main.py", ["python3", "-u", "main.py"]),
])
def test_algorithm_command_replaces_algo_and_splits_like_a_shell(tmp_assets, paths, entrypoint, argv):
    assert specs.algorithm_command(entrypoint) == argv
    settings = settings_for()
    job = build_job(tmp_assets, settings, algorithm=raw_algorithm(entrypoint=entrypoint))
    spec = specs.build_algorithm(job, settings.environments[0], settings, paths, "img:1", Slot())
    assert spec.entrypoint == argv[:1]  # replaces the image's ENTRYPOINT
    assert spec.command == argv[1:]


@pytest.mark.parametrize("image, tag, checksum, ref", [
    ("repo/algo", "1.0", "", "repo/algo:1.0"),
    ("repo/algo", "", "", "repo/algo:latest"),
    ("localhost:5000/algo", "v2", "", "localhost:5000/algo:v2"),
    ("repo/algo", "1.0", "sha256:" + "ab" * 32, "repo/algo@sha256:" + "ab" * 32),
    ("repo/algo", "", "sha256:" + "cd" * 32, "repo/algo@sha256:" + "cd" * 32),
    ("repo/algo", "1.0", "md5:1234", "repo/algo:1.0"),
])
def test_image_reference(image, tag, checksum, ref):
    assert specs.image_reference(image, tag, checksum) == ref


# ------------------------------------------------------------------------------ provision and filter


def test_provision_spec_without_downloads_is_offline(tmp_assets, paths):
    settings = settings_for()
    job = build_job(tmp_assets, settings)
    spec = specs.build_provision(job, settings, paths)
    assert spec.name == f"runnerd-{job.job_id}-provision"
    assert spec.image == "helper-img:3"
    assert spec.command == ["python3", "/runnerd/provision.py"]
    assert spec.labels == {LABEL_JOB: job.job_id, LABEL_STEP: "provision"}
    assert spec.user == "1234:5678"
    assert spec.network == "none"
    assert json.loads(spec.env["RUNNERD_PLAN"])["downloads"] == []
    mounts = mounts_by_target(spec)
    assert mounts["/runnerd/provision.py"][1] is True
    assert Path(mounts["/runnerd/provision.py"][0]).is_file()
    assert_no_docker_socket(spec)
    kw = to_sdk_kwargs(spec)
    assert kw["cap_drop"] == ["ALL"] and kw["security_opt"] == ["no-new-privileges:true"]
    assert kw["mem_limit"] == kw["memswap_limit"]


def test_provision_spec_with_url_downloads_gets_the_bridge(tmp_assets, paths):
    settings = settings_for()
    url_did = dataset(tmp_assets, url="http://127.0.0.1:9/data.csv")
    job = build_job(tmp_assets, settings, datasets=[dataset(tmp_assets), url_did])
    spec = specs.build_provision(job, settings, paths)
    assert spec.network == "runnerd"
    plan = json.loads(spec.env["RUNNERD_PLAN"])
    assert plan["downloads"] == [{"kind": "dataset", "label": f"dataset {url_did} file 0",
                                  "url": "http://127.0.0.1:9/data.csv", "sha256": None,
                                  "dest": f"/data/inputs/{url_did.removeprefix('did:op:')}/0", "allow": []}]
    # the algorithm itself stays offline
    algo = specs.build_algorithm(job, settings.environments[0], settings, paths, "img:1", Slot())
    assert algo.network == "none"


def test_provision_downloads_an_algorithm_url(tmp_assets, paths):
    settings = settings_for()
    algorithm = {"meta": {"url": "http://127.0.0.1:9/algo.py",
                          "container": {"entrypoint": "python3 $ALGO", "image": "img", "tag": "1"}}}
    job = build_job(tmp_assets, settings, algorithm=algorithm)
    spec = specs.build_provision(job, settings, paths)
    assert spec.network == "runnerd"
    plan = json.loads(spec.env["RUNNERD_PLAN"])
    assert plan["downloads"][-1]["dest"] == layout.ALGORITHM and plan["downloads"][-1]["kind"] == "algorithm"


def settings_allowing(*allow):
    base = {"id": "env", "nCPU": 1, "ramGB": 0.5, "diskGB": 0.1, "rawAlgorithmImages": ["*"]}
    return parse_config({"jobUser": "1234:5678", "helperImage": "helper-img:3", "provisionAllow": list(allow),
                         "environments": [base]})


def test_provision_allow_list_only_for_the_operators_urls(tmp_assets, paths):
    """provisionAllow lets the operator's DDO URLs reach the LAN; a consumer's algorithm.meta.url
    always gets the strict public-only rule (issue #10 item 4)."""
    settings = settings_allowing("10.0.0.0/8", "files.internal")
    url_did = dataset(tmp_assets, url="http://files.internal/data.csv")
    consumer = {"meta": {"url": "http://files.internal/other",
                         "container": {"entrypoint": "python3 $ALGO", "image": "img", "tag": "1"}}}
    job = build_job(tmp_assets, settings, datasets=[url_did], algorithm=consumer)
    assert isinstance(job.plan.algorithm.code, RemoteFile) and job.plan.algorithm.code.origin == "consumer"
    dataset_dl, algo_dl = json.loads(specs.build_provision(job, settings, paths).env["RUNNERD_PLAN"])["downloads"]
    assert dataset_dl["allow"] == ["10.0.0.0/8", "files.internal"]
    assert algo_dl["allow"] == [] and algo_dl["label"] == "algorithm"
    # A spec stored without the marker (before it existed) is still the consumer's: no DID behind it.
    stored = json.loads(job.plan.to_json())
    del stored["algorithm"]["code"]["origin"]
    job = job.with_plan(JobPlan.from_json(json.dumps(stored)))
    assert specs.provision_plan(job, settings)["downloads"][1]["allow"] == []

    # A published algorithm's URL is the operator's, like a dataset's.
    algo_did = algorithm_asset(tmp_assets, "print(1)")
    ddo_path = tmp_assets / f"{algo_did.removeprefix('did:op:')}.json"
    ddo = json.loads(ddo_path.read_text())
    ddo["services"][0]["files"] = [{"type": "url", "url": "http://files.internal/algo.py"}]
    ddo_path.write_text(json.dumps(ddo))
    job = build_job(tmp_assets, settings, datasets=[url_did],
                    algorithm={"documentId": algo_did, "serviceId": "access"})
    algo_dl = specs.provision_plan(job, settings)["downloads"][1]
    assert algo_dl["allow"] == ["10.0.0.0/8", "files.internal"] and algo_dl["label"] == f"algorithm {algo_did}"
    # The helper container gets the step's address-policy module beside the script.
    assert "/runnerd/netpolicy.py" in mounts_by_target(specs.build_provision(job, settings, paths))


def test_filter_spec_reads_outputs_read_only_offline(tmp_assets, paths):
    settings = settings_for(maxOutputFiles=7, allowNetwork=True)
    job = build_job(tmp_assets, settings, datasets=[dataset(tmp_assets, network=True)])
    assert job.plan.network is True
    spec = specs.build_filter(job, settings.environments[0], settings, paths)
    assert spec.name == f"runnerd-{job.job_id}-filter"
    assert spec.labels == {LABEL_JOB: job.job_id, LABEL_STEP: "filter"}
    assert spec.network == "none"  # even when the algorithm had network
    assert spec.user == "1234:5678"
    mounts = mounts_by_target(spec)
    assert mounts["/data/outputs"] == (str(paths.fs / "outputs"), True)
    assert mounts[layout.STEP_OUT] == (str(paths.results), False)
    assert "/data/inputs" not in mounts
    plan = json.loads(spec.env["RUNNERD_PLAN"])
    assert plan["maxFiles"] == 7 and plan["maxBytes"] == settings.environments[0].disk_bytes
    assert_no_docker_socket(spec)
    kw = to_sdk_kwargs(spec)
    assert kw["network_mode"] == "none" and kw["cap_drop"] == ["ALL"]


def test_no_step_ever_runs_as_root(tmp_assets, paths):
    settings = settings_for()
    job = build_job(tmp_assets, settings)
    env = settings.environments[0]
    for spec in (specs.build_provision(job, settings, paths),
                 specs.build_algorithm(job, env, settings, paths, "img:1", Slot()),
                 specs.build_filter(job, env, settings, paths)):
        uid = spec.user.split(":")[0]
        assert uid.isdigit() and int(uid) != 0, spec.name
        assert spec.labels[LABEL_STEP] in {s.value for s in StepKind}


# ------------------------------------------------------------------------------ Allocator


def env_of(**overrides):
    return settings_for(**overrides).environments[0]


def test_whole_cores_are_pinned_while_free_then_quota_only():
    alloc = Allocator([3, 0, 2, 1])
    env = env_of(nCPU=2)
    first, second, third = alloc.take(env), alloc.take(env), alloc.take(env)
    assert first.cpuset == "0,1" and second.cpuset == "2,3"
    assert third.cpuset is None  # no whole cores left: CPU quota only
    assert alloc.cores_used == {0, 1, 2, 3}
    alloc.release(third)
    assert alloc.cores_used == {0, 1, 2, 3}
    alloc.release(first)
    assert alloc.cores_used == {2, 3}
    assert alloc.take(env).cpuset == "0,1"


def test_fractional_ncpu_is_never_pinned():
    alloc = Allocator([0, 1, 2, 3])
    for _ in range(3):
        assert alloc.take(env_of(nCPU=1.5)).cpuset is None
    assert alloc.cores_used == set()


def test_more_cores_than_the_host_has_is_quota_only():
    alloc = Allocator([0, 1])
    assert alloc.take(env_of(nCPU=4)).cpuset is None
    assert alloc.take(env_of(nCPU=1)).cpuset == "0"


def test_gpus_are_exclusive_and_released():
    alloc = Allocator([0, 1, 2, 3, 4, 5, 6, 7])
    env = env_of(nCPU=1, gpus=["g0", "g1", "g2"], nGPU=2)
    first = alloc.take(env)
    assert first is not None and first.gpus == ("g0", "g1")
    cores_before = set(alloc.cores_used)
    assert alloc.take(env) is None  # only one GPU free: the job waits
    assert alloc.cores_used == cores_before  # a refused take holds nothing
    assert alloc.gpus_used == {"g0", "g1"}
    alloc.release(first)
    assert alloc.gpus_used == set()
    again = alloc.take(env)
    assert again is not None and len(again.gpus) == 2


def test_concurrent_jobs_never_share_a_gpu():
    alloc = Allocator([0, 1])
    env = env_of(nCPU=0.5, gpus=["0", "1", "2"], nGPU=1)
    slots = [alloc.take(env) for _ in range(3)]
    assert [len(s.gpus) for s in slots] == [1, 1, 1]
    assert len({s.gpus[0] for s in slots}) == 3
    assert alloc.take(env) is None
    alloc.release(slots[1])
    fourth = alloc.take(env)
    assert fourth.gpus == slots[1].gpus
    held = [s.gpus[0] for s in (slots[0], slots[2], fourth)]
    assert len(set(held)) == 3


def test_environments_listing_the_same_gpu_do_not_share_it():
    alloc = Allocator([0])
    a = env_of(nCPU=0.5, gpus=["0", "1"], nGPU=2)
    b = env_of(nCPU=0.5, gpus=["1", "2"], nGPU=1)
    slot_b = alloc.take(b)
    assert slot_b.gpus == ("1",)
    assert alloc.take(a) is None  # GPU 1 is held by the other environment's job
    alloc.release(slot_b)
    assert alloc.take(a).gpus == ("0", "1")
    assert alloc.take(b).gpus == ("2",)


def test_environment_without_gpus_gets_none():
    alloc = Allocator([0, 1])
    slot = alloc.take(env_of(nCPU=1))
    assert slot.gpus == ()
    assert "device_requests" not in to_sdk_kwargs(ContainerSpec("n", "i", [], {}, "1:1",
                                                                gpu_device_ids=slot.gpus))


def test_hold_reserves_a_recovered_jobs_resources():
    alloc = Allocator([0, 1, 2, 3])
    env = env_of(nCPU=2, gpus=["0", "1"], nGPU=1)
    alloc.hold(Slot("0,1", ("0",)))  # re-adopted after a restart
    slot = alloc.take(env)
    assert slot.cpuset == "2,3" and slot.gpus == ("1",)
    assert alloc.take(env) is None


def test_a_published_local_algorithm_on_local_data_has_nothing_to_download(tmp_assets, paths):
    """No download, so no provision container (#13); the configurationLog runnerd writes instead
    names each input and the algorithm by label, never by the operator's paths."""
    settings = settings_for()
    did = dataset(tmp_assets, b"a\n1\n")
    algo_did = algorithm_asset(tmp_assets, "print(1)")
    job = build_job(tmp_assets, settings, datasets=[did], algorithm={"documentId": algo_did, "serviceId": "access"})
    assert specs.provision_plan(job, settings)["downloads"] == []
    lines = specs.prepared_locally(job)
    assert lines[:2] == [f"dataset {did} file 0: local file, mounted read-only",
                         f"algorithm {algo_did}: local file, mounted read-only"]
    assert not any(str(tmp_assets) in line for line in lines)
    raw_job = build_job(tmp_assets, settings, datasets=[did], algorithm=raw_algorithm())
    code_bytes = len(raw_job.plan.algorithm.code.text)
    assert specs.prepared_locally(raw_job)[1] == f"algorithm: raw code, {code_bytes} bytes"
    url_did = dataset(tmp_assets, url="http://files.example/data.csv")
    assert len(specs.provision_plan(build_job(tmp_assets, settings, datasets=[url_did], algorithm=raw_algorithm()),
                                    settings)["downloads"]) == 1
