"""Start-time validation limits (in-process: Intake over a real catalog in tmp_path)."""

from __future__ import annotations

import json

import pytest

from runnerd.catalog import Catalog
from runnerd.config import parse_config
from runnerd.engine.intake import MAX_CUSTOM_BYTES, MAX_CUSTOM_DEPTH, Intake
from runnerd.errors import BadRequest
from tests.helpers import TEST_RAW_IMAGES, dataset, raw

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
    assert job.input_dids == [did, other] and job.spec["network"] is False


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
    for bad in (_nested(MAX_CUSTOM_DEPTH + 1), json.dumps(_nested(4000)), {"x": "y" * MAX_CUSTOM_BYTES}):
        algo[where] = bad
        with pytest.raises(BadRequest) as refused:
            check.build(params(did, algorithm=algo), OWNER)
        assert refused.value.field == f"algorithm.{where}" and refused.value.http_status == 400
