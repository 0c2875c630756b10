"""Start-time validation: limits, inputs and their policies, local files (in-process: Intake over a
real catalog in tmp_path)."""

from __future__ import annotations

import secrets

import pytest

from runnerd.catalog import Catalog, did_for
from runnerd.config import parse_config
from runnerd.engine.intake import MAX_CUSTOM_BYTES, MAX_CUSTOM_DEPTH, Intake
from runnerd.errors import BadRequest, PolicyRejected
from tests.helpers import TEST_RAW_IMAGES, algorithm_asset, dataset, raw, write_ddo

OWNER = "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23"


@pytest.fixture
def intake(tmp_assets):
    settings = parse_config({"environments": [{"id": "env", "rawAlgorithmImages": TEST_RAW_IMAGES}]})
    return Intake(settings, Catalog(tmp_assets)), dataset(tmp_assets), dataset(tmp_assets)


def params(did: str, **extra) -> dict:
    return {"environment": "env", "algorithm": raw("print(1)"),
            "dataset": {"documentId": did, "serviceId": "compute", "transferTxId": "0x1"}, **extra}


def test_a_valid_start_builds_a_job(intake):
    check, did, other = intake
    job = check.build(params(did, additionalDatasets=[{"documentId": other, "serviceId": "compute"}]), OWNER)
    assert job.input_dids == [did, other] and job.plan.network is False


def test_the_same_dataset_twice_is_refused(intake):
    check, did, _ = intake
    with pytest.raises(BadRequest) as refused:
        check.build(params(did, additionalDatasets=[{"documentId": did, "serviceId": "compute"}]), OWNER)
    assert refused.value.field == "additionalDatasets"


def _nested(depth: int):
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("where", ["algocustomdata", "userdata"])
def test_custom_data_is_bounded_in_depth_and_size(intake, where):
    check, did, _ = intake
    algo = raw("print(1)")
    algo[where] = _nested(MAX_CUSTOM_DEPTH - 1)
    check.build(params(did, algorithm=algo), OWNER)  # deep enough is fine
    deep_text = "[" * 4000 + "1" + "]" * 4000  # json.dumps(_nested(4000)), without needing its recursion
    for bad in (_nested(MAX_CUSTOM_DEPTH + 1), deep_text, {"x": "y" * MAX_CUSTOM_BYTES}):
        algo[where] = bad
        with pytest.raises(BadRequest) as refused:
            check.build(params(did, algorithm=algo), OWNER)
        assert refused.value.field == f"algorithm.{where}" and refused.value.http_status == 400


# -- inputs: every one a dataset offered for compute, under its own policy (#10 item 2, #11) ------------

def _two_service_dataset(assets, *, allow_raw: bool, network: bool = False) -> str:
    """A dataset with a compute service (its policy) and an access service over the same file."""
    (assets / "files").mkdir(exist_ok=True)
    name = secrets.token_hex(6)
    (assets / "files" / name).write_bytes(b"secret rows\n")
    files = [{"type": "file", "path": f"files/{name}"}]
    return write_ddo(assets, {
        "id": did_for("dataset", name), "metadata": {"type": "dataset", "name": name}, "nft": {"owner": ""},
        "services": [
            {"id": "compute", "type": "compute", "files": files,
             "compute": {"allowRawAlgorithm": allow_raw, "allowNetworkAccess": network}},
            {"id": "access", "type": "access", "files": files},
        ]})


def _settings(**overrides):
    return parse_config({"environments": [{"id": "env", "rawAlgorithmImages": TEST_RAW_IMAGES}], **overrides})


def test_an_input_named_through_its_access_service_is_refused_by_default(tmp_assets):
    check = Intake(_settings(), Catalog(tmp_assets))
    main, other = dataset(tmp_assets), _two_service_dataset(tmp_assets, allow_raw=True)
    with pytest.raises(PolicyRejected) as refused:
        check.build(params(main, additionalDatasets=[{"documentId": other, "serviceId": "access"}]), OWNER)
    assert (refused.value.code, refused.value.field) == ("not_compute", "datasets[1].serviceId")
    # an access-only dataset too
    plain = dataset(tmp_assets, service_type="access")
    with pytest.raises(PolicyRejected) as refused:
        check.build(params(main, additionalDatasets=[{"documentId": plain, "serviceId": "compute"}]), OWNER)
    assert refused.value.code == "not_compute"


def test_with_access_inputs_the_datasets_compute_policy_still_rules(tmp_assets):
    check = Intake(_settings(accessInputs=True), Catalog(tmp_assets))
    main = dataset(tmp_assets)
    open_, closed = _two_service_dataset(tmp_assets, allow_raw=True), _two_service_dataset(tmp_assets, allow_raw=False)
    plain = dataset(tmp_assets, service_type="access")  # offered for download only: Provider's rule, any algorithm
    job = check.build(params(main, additionalDatasets=[{"documentId": open_, "serviceId": "access"},
                                                      {"documentId": plain, "serviceId": "compute"}]), OWNER)
    assert job.input_dids == [main, open_, plain] and job.plan.network is False
    with pytest.raises(PolicyRejected) as refused:  # the raw algorithm may not read it for compute: nor so
        check.build(params(main, additionalDatasets=[{"documentId": closed, "serviceId": "access"}]), OWNER)
    assert (refused.value.code, refused.value.field) == ("no_raw_algo_allowed", "datasets[1]")
    with pytest.raises(PolicyRejected) as refused:  # the main dataset is still ordered for compute
        check.build(params(open_, dataset={"documentId": open_, "serviceId": "access", "transferTxId": "0x1"}), OWNER)
    assert refused.value.code == "main_service_compute"


def test_an_additional_dataset_that_forbids_raw_code_is_refused_for_a_raw_algorithm(tmp_assets):
    check = Intake(_settings(), Catalog(tmp_assets))
    main, closed = dataset(tmp_assets), _two_service_dataset(tmp_assets, allow_raw=False)
    for service in ("compute", "access"):
        with pytest.raises(PolicyRejected) as refused:
            check.build(params(main, additionalDatasets=[{"documentId": closed, "serviceId": service}]), OWNER)
        assert refused.value.code in ("no_raw_algo_allowed", "not_compute"), service
        assert refused.value.field.startswith("datasets[1]")


def test_an_algorithm_asset_is_not_a_dataset(tmp_assets):
    check = Intake(_settings(accessInputs=True), Catalog(tmp_assets))
    main, algo = dataset(tmp_assets), algorithm_asset(tmp_assets, "print('the code of a registered algorithm')")
    with pytest.raises(PolicyRejected) as refused:
        check.build(params(main, additionalDatasets=[{"documentId": algo, "serviceId": "access"}]), OWNER)
    assert (refused.value.code, refused.value.field) == ("not_dataset", "datasets[1].documentId")
    with pytest.raises(PolicyRejected) as refused:
        check.build(params(algo, dataset={"documentId": algo, "serviceId": "access", "transferTxId": "0x1"}), OWNER)
    assert (refused.value.code, refused.value.field) == ("not_dataset", "dataset.documentId")


def _ref(did: str) -> dict:
    return {"documentId": did, "serviceId": "compute", "transferTxId": "0x1"}


def test_datasets_list_beside_dataset_adds_inputs(intake):
    check, a, b = intake
    job = check.build(params(a, datasets=[_ref(a), _ref(b)]), OWNER)  # what ocean.js >= 4 sends
    assert job.input_dids == [a, b] and [i.did for i in job.plan.inputs] == [a, b]
    # the same inputs given both ways agree; [A] alone adds nothing
    assert check.build(params(a, datasets=[_ref(a), _ref(b)], additionalDatasets=[_ref(b)]), OWNER).input_dids == [a, b]
    assert check.build(params(a, datasets=[_ref(a)]), OWNER).input_dids == [a]


@pytest.mark.parametrize("case", ["first_differs", "disagrees_with_additional", "not_a_list", "empty"])
def test_a_datasets_list_that_disagrees_is_refused(intake, tmp_assets, case):
    check, a, b = intake
    c = dataset(tmp_assets)
    extra = {"first_differs": {"datasets": [_ref(b), _ref(a)]},
             "disagrees_with_additional": {"datasets": [_ref(a), _ref(b)], "additionalDatasets": [_ref(c)]},
             "not_a_list": {"datasets": _ref(a)}, "empty": {"datasets": []}}[case]
    with pytest.raises(BadRequest) as refused:
        check.build(params(a, **extra), OWNER)
    assert (refused.value.http_status, refused.value.field) == (400, "datasets")


# -- local files: no symbolic link below the assets dir or an assetRoots root (#10 item 3) -------------

@pytest.mark.parametrize("where", ["file", "folder"])
def test_a_symlinked_asset_file_is_refused_and_the_error_names_no_path(tmp_path, tmp_assets, where):
    outside = tmp_path / "host-secret-dir"
    outside.mkdir()
    (outside / "shadow").write_text("host secret\n")
    did = dataset(tmp_assets, name="victim")
    target = tmp_assets / "files" / "victim"
    if where == "file":
        target.unlink()
        target.symlink_to(outside / "shadow")
    else:  # a link on the way: files/ itself
        (tmp_assets / "real-files").mkdir()
        (tmp_assets / "files").rename(tmp_assets / "real-files" / "files")
        (tmp_assets / "files").symlink_to(tmp_assets / "real-files" / "files")
    check = Intake(_settings(), Catalog(tmp_assets))
    with pytest.raises(PolicyRejected) as refused:
        check.build(params(did), OWNER)
    assert (refused.value.code, refused.value.field) == ("file_unavailable", "dataset")
    assert str(tmp_path) not in refused.value.message and "victim" not in refused.value.message
    assert did in refused.value.message


def test_a_symlink_to_another_asset_is_refused(tmp_assets):
    theirs = dataset(tmp_assets, b"their rows\n", name="theirs")
    mine = dataset(tmp_assets, name="mine")
    (tmp_assets / "files" / "mine").unlink()
    (tmp_assets / "files" / "mine").symlink_to("theirs")  # inside the assets dir, but another asset's file
    check = Intake(_settings(), Catalog(tmp_assets))
    with pytest.raises(PolicyRejected):
        check.build(params(mine), OWNER)
    assert check.build(params(theirs), OWNER).plan.inputs[0].files[0].path.endswith("/files/theirs")


def test_an_asset_root_may_itself_be_a_symlink(tmp_path):
    real = tmp_path / "real-assets"
    real.mkdir()
    (tmp_path / "assets").symlink_to(real)  # the operator's own layout: trusted
    did = dataset(tmp_path / "assets")
    job = Intake(_settings(), Catalog(tmp_path / "assets")).build(params(did), OWNER)
    assert job.plan.inputs[0].files[0].path.startswith(str(real.resolve()))
