"""`runnerd assets` as an operator uses it (#14): identity and replacement rules, folder datasets,
the policy in `list`, and warnings for URLs the provision step will refuse. No daemon needed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture
def assets_cli(tmp_path):
    def run(*args: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "RUNNERD_CONFIG": str(tmp_path / "none.yaml")}
        return subprocess.run([sys.executable, "-m", "runnerd", "assets", *args, "--assets", str(tmp_path / "A"),
                               "--data-dir", str(tmp_path / "D")], capture_output=True, text=True, env=env,
                              cwd=tmp_path, timeout=60)

    return run


def _ddo(tmp_path: Path, did: str) -> dict:
    return json.loads((tmp_path / "A" / f"{did.removeprefix('did:op:')}.json").read_text())


def test_adding_the_same_file_with_another_policy_is_refused_unless_replace(tmp_path, assets_cli):
    (tmp_path / "d.csv").write_text("a\n1\n")
    first = assets_cli("add", str(tmp_path / "d.csv"))
    did = first.stdout.strip()
    assert first.returncode == 0 and "no raw code" in first.stderr
    again = assets_cli("add", str(tmp_path / "d.csv"))
    assert again.returncode == 0 and again.stdout.strip() == did and "unchanged" in again.stderr
    widened = assets_cli("add", str(tmp_path / "d.csv"), "--allow-raw-algorithm")
    assert widened.returncode == 1 and widened.stdout == ""
    assert "--replace" in widened.stderr and "no raw code -> raw code allowed" in widened.stderr.replace(
        ", any published algorithm", "")
    assert "Traceback" not in widened.stderr
    assert _ddo(tmp_path, did)["services"][0]["compute"]["allowRawAlgorithm"] is False  # nothing changed
    replaced = assets_cli("add", str(tmp_path / "d.csv"), "--allow-raw-algorithm", "--replace")
    assert replaced.returncode == 0 and replaced.stdout.strip() == did
    assert _ddo(tmp_path, did)["services"][0]["compute"]["allowRawAlgorithm"] is True


def test_a_folder_is_one_dataset_of_its_regular_files_in_order(tmp_path, assets_cli):
    folder = tmp_path / "set"
    (folder / "sub").mkdir(parents=True)
    (folder / "b.csv").write_text("b")
    (folder / "a.csv").write_text("a")
    (folder / "sub" / "c.csv").write_text("c")
    (folder / "link").symlink_to("/etc/passwd")
    proc = assets_cli("add", str(folder), "--allow-raw-algorithm")
    assert proc.returncode == 0, proc.stderr
    files = _ddo(tmp_path, proc.stdout.strip())["services"][0]["files"]
    assert [Path(f["path"]).read_text() for f in files] == ["a", "b", "c"]  # the symlink is left out
    empty = tmp_path / "empty"
    empty.mkdir()
    refused = assets_cli("add", str(empty))
    assert refused.returncode == 2 and "0 regular files" in refused.stderr


def test_copy_snapshots_instead_of_sharing_the_content(tmp_path, assets_cli):
    (tmp_path / "d.csv").write_text("v1")
    linked = _ddo(tmp_path, assets_cli("add", str(tmp_path / "d.csv")).stdout.strip())
    copied = _ddo(tmp_path, assets_cli("add", str(tmp_path / "d.csv"), "--type", "algorithm", "--image", "x",
                                       "--entrypoint", "sh $ALGO", "--copy").stdout.strip())
    with open(tmp_path / "d.csv", "w") as f:  # an edit in place
        f.write("v2")
    assert Path(linked["services"][0]["files"][0]["path"]).read_text() == "v2"
    assert Path(copied["services"][0]["files"][0]["path"]).read_text() == "v1"


def test_list_shows_each_assets_policy(tmp_path, assets_cli):
    (tmp_path / "d.csv").write_text("a")
    assets_cli("add", str(tmp_path / "d.csv"), "--allow-raw-algorithm", "--allow-network")
    listed = assets_cli("list")
    assert "[raw code allowed, any published algorithm, network allowed]" in listed.stdout


@pytest.mark.parametrize("url,expected", [
    ("http://127.0.0.1:8000/x.csv", "loopback"),
    ("http://localhost/x.csv", "loopback"),
    ("http://10.1.2.3/x.csv", "private"),
    ("http://[fe80::1]/x.csv", "link-local"),
])
def test_urls_the_provision_step_will_refuse_are_warned_about(assets_cli, url, expected):
    proc = assets_cli("add", url)
    assert proc.returncode == 0 and proc.stdout.startswith("did:op:")
    assert "warning: jobs will fail to fetch this URL" in proc.stderr and expected in proc.stderr


def test_a_public_or_named_url_gets_no_warning(assets_cli):
    for url in ("http://93.184.215.14/x.csv", "https://data.example.org/x.csv"):  # never contacted
        proc = assets_cli("add", url)
        assert proc.returncode == 0 and "warning" not in proc.stderr
