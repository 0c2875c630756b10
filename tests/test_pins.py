"""Pinned asset files (engine/pins.py): what a job's container mounts is the inode runnerd opened and
checked when the workspace was prepared, never what a path names later (#10 item 3). In-process,
on the real filesystem; the cross-filesystem case mounts a tmpfs (root only)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from runnerd.catalog import Catalog
from runnerd.config import parse_config
from runnerd.engine.intake import Intake
from runnerd.engine.pins import pin_all, repin, unpin
from runnerd.errors import WorkspaceError
from runnerd.layout import JobPaths
from tests.helpers import TEST_RAW_IMAGES, dataset, raw

OWNER = "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23"
UID, GID = 65532, 65532


def _job(assets: Path, did: str, roots: tuple[str, ...] = ()):
    settings = parse_config({"environments": [{"id": "env", "rawAlgorithmImages": TEST_RAW_IMAGES}],
                             "assetRoots": list(roots)})
    return Intake(settings, Catalog(assets, tuple(Path(r) for r in roots))).build({
        "environment": "env", "algorithm": raw("print(1)"),
        "dataset": {"documentId": did, "serviceId": "compute", "transferTxId": "0x1"}}, OWNER)


@pytest.fixture
def paths(tmp_path) -> JobPaths:
    p = JobPaths.for_job(tmp_path / "data", "a" * 32)
    p.root.mkdir(parents=True)
    return p


def test_a_pin_is_the_file_as_it_was_and_survives_a_swap(tmp_path, tmp_assets, paths):
    did = dataset(tmp_assets, b"original\n", name="rows.csv")
    job = _job(tmp_assets, did)
    pin_all(job, paths, UID, GID)
    pin, source = paths.pinned_input(0, 0), tmp_assets / "files" / "rows.csv"
    assert os.stat(pin).st_ino == os.stat(source).st_ino and os.stat(pin).st_nlink == 2  # a hard link
    assert oct(os.stat(paths.pinned).st_mode & 0o777) == "0o700"
    (tmp_path / "shadow").write_text("host secret\n")
    source.unlink()
    source.symlink_to(tmp_path / "shadow")  # after the pin: the pin still is the original
    assert pin.read_text() == "original\n"
    repin(job, paths, UID, GID)  # a pin that exists is kept as it is
    assert pin.read_text() == "original\n"
    unpin(paths)
    assert not paths.pinned.exists() and (tmp_path / "shadow").read_text() == "host secret\n"


def test_a_file_swapped_for_a_symlink_before_the_pin_is_refused(tmp_path, tmp_assets, paths):
    did = dataset(tmp_assets, b"original\n", name="rows.csv")
    job = _job(tmp_assets, did)
    source = tmp_assets / "files" / "rows.csv"
    (tmp_path / "shadow").write_text("host secret\n")
    source.unlink()
    source.symlink_to(tmp_path / "shadow")
    with pytest.raises(WorkspaceError) as refused:
        pin_all(job, paths, UID, GID)
    assert did in str(refused.value) and str(tmp_path) not in str(refused.value) and "rows" not in str(refused.value)
    assert not paths.pinned_input(0, 0).exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_a_file_on_another_filesystem_is_pinned_by_a_bind_of_the_open_file(tmp_path, tmp_assets, paths):
    other = tmp_path / "other-fs"
    other.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(other)], check=True)
    try:
        (other / "big.csv").write_text("on another disk\n")
        os.chmod(other / "big.csv", 0o644)
        did = dataset(tmp_assets, files=[{"type": "file", "path": str(other / "big.csv")}])
        job = _job(tmp_assets, did, roots=(str(other),))
        pin_all(job, paths, UID, GID)
        pin = paths.pinned_input(0, 0)
        assert pin.read_text() == "on another disk\n" and os.stat(pin).st_dev == os.stat(other).st_dev
        (other / "big.csv").unlink()
        (other / "big.csv").write_text("replaced\n")
        assert pin.read_text() == "on another disk\n"  # the open inode, not the path
        # a reboot drops runnerd's mounts: the placeholder left is unreadable, and repin mounts again
        subprocess.run(["umount", str(pin)], check=True)
        assert os.stat(pin).st_size == 0 and os.stat(pin).st_mode & 0o777 == 0
        repin(job, paths, UID, GID)
        assert pin.read_text() == "replaced\n"
        unpin(paths)
        assert not paths.pinned.exists()
        assert str(pin) not in Path("/proc/self/mounts").read_text()
    finally:
        unpin(paths)
        subprocess.run(["umount", "-l", str(other)], capture_output=True)


def test_a_trusted_algorithm_changed_after_submit_is_not_pinned(tmp_assets, paths):
    import hashlib

    from tests.helpers import algorithm_asset

    algo = algorithm_asset(tmp_assets, "print('trusted')\n", name="algo")
    digest = hashlib.sha256(b"print('trusted')\n").hexdigest()
    did = dataset(tmp_assets, allow_raw=False,
                  trusted=[{"did": algo, "filesChecksum": digest, "containerSectionChecksum": ""}])
    settings = parse_config({"environments": [{"id": "env", "rawAlgorithmImages": TEST_RAW_IMAGES}]})
    job = Intake(settings, Catalog(tmp_assets)).build({
        "environment": "env", "algorithm": {"documentId": algo, "serviceId": "access"},
        "dataset": {"documentId": did, "serviceId": "compute", "transferTxId": "0x1"}}, OWNER)
    (tmp_assets / "files" / "algo.py").write_text("print('not what the dataset trusts')\n")
    with pytest.raises(WorkspaceError) as refused:
        pin_all(job, paths, UID, GID)
    assert "checksum" in str(refused.value) and algo in str(refused.value)
    assert not paths.pinned_algorithm.exists()
