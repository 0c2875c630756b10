"""runnerd/config.py: environments.yaml is parsed into frozen Settings, every key has its default, and
a bad file is refused with a ConfigError that names the key path (SPEC §4). Also the
`runnerd check-config` command, run as a real subprocess."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from runnerd.config import (CHAIN_KEYS, ENV_KEYS, GLOBAL_KEYS, Chain, ConfigError, Environment, Settings, load_config,
                            parse_config)

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "environments.yaml"


def write(tmp_path: Path, doc: object, name: str = "environments.yaml") -> Path:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc), encoding="utf-8")
    return path


def minimal(**env: object) -> dict:
    return {"environments": [{"id": "e0", **env}]}


def _as_setting(value: object) -> object:
    """Defaults that are lists are stored as tuples (Settings is frozen)."""
    return tuple(value) if isinstance(value, list) else value


# ------------------------------------------------------------------------------ good files


def test_shipped_environments_yaml_parses():
    settings = load_config(SHIPPED)
    assert isinstance(settings, Settings)
    assert settings.source == str(SHIPPED)
    assert [e.id for e in settings.environments] == ["ocean-compute"]
    env = settings.environment("ocean-compute")
    assert env is not None and env.nCPU == 1 and env.ramGB == 2 and env.diskGB == 5
    assert env.gpus == () and env.nGPU == 0 and env.allowNetwork is False
    assert settings.chainIds == (8996,)
    assert settings.imagePull == "if-missing"
    assert settings.environment("no-such-env") is None


def test_every_key_has_its_default_when_omitted(tmp_path):
    settings = load_config(write(tmp_path, {"environments": [{"id": "only-id"}]}))
    for key in GLOBAL_KEYS:
        assert getattr(settings, key.name) == _as_setting(key.default), key.name
    (env,) = settings.environments
    for key in ENV_KEYS:
        if key.required:
            continue
        assert getattr(env, key.name) == _as_setting(key.default), key.name
    assert env.id == "only-id"


def test_key_tables_match_the_dataclasses():
    """Every declared key lands in a field, and every field (but environments/source) is declared."""
    settings_fields = set(Settings.__dataclass_fields__) - {"environments", "source", "chains"}
    assert {k.name for k in GLOBAL_KEYS} == settings_fields
    assert {k.name for k in ENV_KEYS} == set(Environment.__dataclass_fields__)
    assert {k.name for k in CHAIN_KEYS} == set(Chain.__dataclass_fields__)
    assert [k.name for k in ENV_KEYS if k.required] == ["id"]


def test_a_key_is_one_declaration_and_its_kind_follows_the_field_type():
    """`name: type = key(...)` makes the field and the row (#12): the row's kind and choices come
    from the annotation, so the table cannot disagree with what the dataclass holds."""
    rows = {k.name: k for k in GLOBAL_KEYS + ENV_KEYS}
    assert (rows["imagePull"].kind, rows["imagePull"].choices) == ("enum", ("never", "if-missing", "always"))
    assert (rows["diskQuota"].kind, rows["diskQuota"].choices) == ("enum", ("loop", "tmpfs", "none"))
    assert [rows[n].kind for n in ("chainIds", "gpus", "nCPU", "maxJobs", "unsignedStatus", "jobUser")] == \
        ["list[int]", "list[str]", "number", "int", "bool", "str"]
    declared = {f.name for cls in (Settings, Environment) for f in dataclasses.fields(cls) if f.metadata}
    assert declared == set(rows)


def test_job_user_is_taken_apart_in_config_only():
    settings = parse_config({"jobUser": "1234:5678", **minimal()})
    assert settings.job_ids == (1234, 5678)


@pytest.mark.parametrize("pattern", ["a..b", "x_", "a:b:c", "ghcr.io//x", "python:", "Bad Image"])
def test_raw_image_patterns_are_checked_by_the_image_reference_parser(pattern):
    """An entry no image name could match is refused at load, with config's own words (#12: the
    image reference grammar lives in runnerd/imageref.py only)."""
    with pytest.raises(ConfigError, match=r"^environments\[0\]\.rawAlgorithmImages\[0\]: must be \*, sha256"):
        parse_config(minimal(rawAlgorithmImages=[pattern]))


def test_raw_image_patterns_the_docs_show_load():
    patterns = ["*", "python:3.12-*", "ghcr.io/acme/*", "[::1]:5000/*", "127.0.0.1:5000/x:*", "sha256:" + "a" * 64,
                "python@sha256:" + "b" * 64]
    assert parse_config(minimal(rawAlgorithmImages=patterns)).environments[0].rawAlgorithmImages == tuple(patterns)


def test_fractional_gb_values_are_accepted(tmp_path):
    settings = load_config(write(tmp_path, minimal(ramGB=0.25, diskGB=0.05, nCPU=0.5, maxLogMB=0.5)))
    env = settings.environments[0]
    assert env.ramGB == 0.25 and env.ram_bytes == 256 * 1024**2
    assert env.diskGB == 0.05 and env.disk_bytes == int(0.05 * 1024**3)
    assert env.nCPU == 0.5
    assert env.log_bytes == 512 * 1024


def test_values_are_coerced_to_their_kinds(tmp_path):
    """An integral float for an int key becomes an int; ints for number keys become floats."""
    settings = load_config(write(tmp_path, {"stopGraceSeconds": 2, "resultUrlTtl": 120.0,
                                            "environments": [{"id": "e", "maxJobs": 3.0, "nCPU": 2}]}))
    assert settings.resultUrlTtl == 120 and isinstance(settings.resultUrlTtl, int)
    assert settings.stopGraceSeconds == 2.0 and isinstance(settings.stopGraceSeconds, float)
    env = settings.environments[0]
    assert env.maxJobs == 3 and isinstance(env.maxJobs, int)
    assert env.nCPU == 2.0 and isinstance(env.nCPU, float)


def test_good_multi_environment_file_with_gpus_and_allow_list(tmp_path):
    doc = {
        "chainIds": [1, 8996],
        "provisionAllow": ["127.0.0.1", "10.0.0.0/8", "files.example.internal", "::1"],
        "publicUrl": "https://runner.example.org",
        "jobUser": "1234:1234",
        "environments": [
            {"id": "cpu", "nCPU": 2},
            {"id": "gpu", "gpus": ["0", "GPU-abc"], "nGPU": 2, "capAdd": ["SYS_PTRACE"], "diskQuota": "tmpfs"},
        ],
    }
    settings = load_config(write(tmp_path, doc))
    assert settings.chainIds == (1, 8996)
    assert settings.provisionAllow == ("127.0.0.1", "10.0.0.0/8", "files.example.internal", "::1")
    gpu = settings.environment("gpu")
    assert gpu is not None and gpu.gpus == ("0", "GPU-abc") and gpu.nGPU == 2 and gpu.capAdd == ("SYS_PTRACE",)


def test_settings_are_frozen(tmp_path):
    settings = load_config(write(tmp_path, minimal()))
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.jobUser = "0:0"
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.environments[0].ramGB = 100


# ------------------------------------------------------------------------------ bad files

BAD = [
    # (document, key path that the message must name)
    pytest.param(minimal(ramGB="2GB"), "environments[0].ramGB", id="wrong-type-number"),
    pytest.param({"environments": [{"id": "a"}, {"id": "b", "ramGB": 0.001}]}, "environments[1].ramGB",
                 id="below-minimum"),
    pytest.param({"environments": [{"id": "a"}, {"id": "b", "ramGB": True}]}, "environments[1].ramGB",
                 id="bool-is-not-a-number"),
    pytest.param(minimal(maxJobs=0), "environments[0].maxJobs", id="maxJobs-zero"),
    pytest.param(minimal(maxJobs=1.5), "environments[0].maxJobs", id="int-with-fraction"),
    pytest.param(minimal(nCPU=".inf"), "environments[0].nCPU", id="string-inf"),
    pytest.param(minimal(nCPU=float("inf")), "environments[0].nCPU", id="yaml-inf"),
    pytest.param(minimal(ramGB=float("nan")), "environments[0].ramGB", id="yaml-nan"),
    pytest.param(minimal(allowNetwork="yes please"), "environments[0].allowNetwork", id="wrong-type-bool"),
    pytest.param(minimal(gpus="0,1"), "environments[0].gpus", id="list-expected"),
    pytest.param(minimal(gpus=["0", ""]), "environments[0].gpus[1]", id="empty-list-item"),
    pytest.param(minimal(gpus=["0", "0"], nGPU=1), "environments[0].gpus", id="gpu-listed-twice"),
    pytest.param(minimal(diskQuota="zfs"), "environments[0].diskQuota", id="bad-enum"),
    pytest.param(minimal(diskQuota="tmpfs", diskGB=100), "environments[0].diskQuota", id="tmpfs-too-big"),
    pytest.param({"environments": [{"id": "a", "cpus": 2}]}, "environments[0].cpus", id="unknown-env-key"),
    pytest.param({"imagepull": "never", **minimal()}, "imagepull", id="unknown-top-level-key"),
    pytest.param({"imagePull": "sometimes", **minimal()}, "imagePull", id="bad-enum-top-level"),
    pytest.param({"unsignedStatus": "false", **minimal()}, "unsignedStatus", id="string-for-bool"),
    pytest.param({"resultUrlTtl": 10, **minimal()}, "resultUrlTtl", id="top-level-below-minimum"),
    pytest.param({"environments": [{"id": "a"}, {"id": "a"}]}, "environments[1].id", id="duplicate-env-id"),
    pytest.param({"environments": [{"id": "a"}, {"description": "no id"}]}, "environments[1].id",
                 id="missing-id"),
    pytest.param(minimal(nGPU=2, gpus=["0"]), "environments[0].nGPU", id="nGPU-more-than-gpus"),
    pytest.param(minimal(nGPU=1), "environments[0].nGPU", id="nGPU-without-gpus"),
    pytest.param({"jobUser": "0:0", **minimal()}, "jobUser", id="jobUser-root-uid"),
    pytest.param({"jobUser": "root", **minimal()}, "jobUser", id="jobUser-name"),
    pytest.param({"jobUser": "1000", **minimal()}, "jobUser", id="jobUser-no-gid"),
    pytest.param({"jobUser": "-1:1000", **minimal()}, "jobUser", id="jobUser-negative"),
    pytest.param({"jobUser": 1000, **minimal()}, "jobUser", id="jobUser-not-a-string"),
    pytest.param({"provisionAllow": ["http://10.0.0.1/"], **minimal()}, "provisionAllow[0]",
                 id="provisionAllow-url"),
    pytest.param({"provisionAllow": ["ok.example", "bad host"], **minimal()}, "provisionAllow[1]",
                 id="provisionAllow-space"),
    pytest.param({"provisionAllow": "10.0.0.0/8", **minimal()}, "provisionAllow", id="provisionAllow-not-list"),
    pytest.param({"publicUrl": "runner.example.org", **minimal()}, "publicUrl", id="publicUrl-no-scheme"),
    pytest.param({"publicUrl": "ftp://runner.example.org", **minimal()}, "publicUrl", id="publicUrl-ftp"),
    pytest.param({"chainIds": [], **minimal()}, "chainIds", id="chainIds-empty"),
    pytest.param({"chainIds": [8996, "x"], **minimal()}, "chainIds[1]", id="chainIds-bad-item"),
    pytest.param({"environments": []}, "environments", id="empty-environments"),
    pytest.param({"chainIds": [8996]}, "environments", id="no-environments"),
    pytest.param({"environments": {"id": "a"}}, "environments", id="environments-not-a-list"),
    pytest.param({"environments": ["a"]}, "environments[0]", id="environment-not-a-mapping"),
    pytest.param(minimal(id="   "), "environments[0].id", id="blank-id"),
]


@pytest.mark.parametrize("doc, key_path", BAD)
def test_bad_value_is_refused_naming_the_key_path(tmp_path, doc, key_path):
    path = write(tmp_path, doc)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    # the message names the file, then the key path followed by a colon
    assert message.startswith(f"{path}: "), message
    assert f" {key_path}: " in message, message
    # parse_config (no file) reports the same key path at the start of the message
    with pytest.raises(ConfigError) as direct:
        parse_config(yaml.safe_load(path.read_text()))
    assert str(direct.value).startswith(f"{key_path}: "), str(direct.value)


def test_unknown_key_message_lists_the_known_keys(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, {"environments": [{"id": "a", "ramgb": 1}]}))
    assert "environments[0].ramgb: unknown key" in str(info.value)
    assert "ramGB" in str(info.value)


def test_yaml_syntax_error(tmp_path):
    path = write(tmp_path, "environments:\n  - id: a\n    ramGB: [1, 2\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value) and "not valid YAML" in str(info.value)


@pytest.mark.parametrize("text", ["- id: a\n- id: b\n", "just a string\n", "42\n"])
def test_non_mapping_top_level(tmp_path, text):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "top level must be a mapping" in str(info.value)
    assert str(path) in str(info.value)


def test_non_mapping_top_level_names_the_file_once(tmp_path):
    path = write(tmp_path, "- id: a\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).count(str(path)) == 1, str(info.value)


def test_empty_file_needs_environments(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, ""))
    assert " environments: " in str(info.value)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value) and "no such file" in str(info.value)


def test_unreadable_bytes(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"environments:\n  - id: caf\xe9\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_job_user_with_zero_padded_root_uid_is_refused(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, {"jobUser": "00:1000", **minimal()}))
    assert " jobUser: " in str(info.value)


def test_ram_below_what_docker_accepts_is_refused(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, minimal(ramGB=0.005)))  # 5.1 MiB: above the declared minimum
    assert " environments[0].ramGB: " in str(info.value)


# ------------------------------------------------------------------------------ the CLI


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "runnerd", *args], capture_output=True, text=True, timeout=60,
                          cwd=REPO)


def test_check_config_cli_good_file(tmp_path):
    path = write(tmp_path, {"environments": [{"id": "cpu"}, {"id": "small", "ramGB": 0.25}]})
    proc = run_cli("check-config", str(path))
    assert proc.returncode == 0, proc.stderr
    assert "ok" in proc.stdout and "2 environment(s)" in proc.stdout
    assert "cpu" in proc.stdout and "small" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_check_config_cli_shipped_file():
    proc = run_cli("check-config", str(SHIPPED))
    assert proc.returncode == 0, proc.stderr
    assert "ocean-compute" in proc.stdout


@pytest.mark.parametrize("doc, key", [
    ({"environments": [{"id": "a"}, {"id": "b", "ramGB": -1}]}, "environments[1].ramGB"),
    ({"jobUser": "root", **minimal()}, "jobUser"),
    ("environments: [", "not valid YAML"),
])
def test_check_config_cli_bad_file(tmp_path, doc, key):
    path = write(tmp_path, doc)
    proc = run_cli("check-config", str(path))
    assert proc.returncode == 2
    assert key in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    assert "ok (" not in proc.stdout


def test_check_config_cli_missing_file(tmp_path):
    proc = run_cli("check-config", str(tmp_path / "absent.yaml"))
    assert proc.returncode == 2
    assert "no such file" in proc.stderr and "Traceback" not in proc.stderr
