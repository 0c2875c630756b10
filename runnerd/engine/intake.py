"""Turn a verified start request into a Job: Ocean's start-time policy, in Ocean's order and with
Ocean's codes (reference/provider-compute.md §8), against the local catalog.

The job's plan (domain.JobPlan) is self-contained (resolved files, DDOs, container, code), so a job
runs the same way after a restart even if its DDO files have changed since.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import uuid
from dataclasses import replace
from typing import Any

from runnerd import egress, imageref
from runnerd.catalog import DID_RE, Asset, AssetError, Catalog, mode_readable_by, open_no_follow
from runnerd.clock import SYSTEM, Clock
from runnerd.config import Environment, Settings
from runnerd.containers.spec import algorithm_command
from runnerd.domain import (
    AlgorithmContainer,
    AlgorithmPlan,
    AssetFile,
    InputPlan,
    JobPlan,
    LocalFile,
    PlannedJob,
    RawCode,
    RemoteFile,
    asset_file,
    file_dict,
)
from runnerd.errors import BadRequest, PolicyRejected
from runnerd.fields import text

log = logging.getLogger("runnerd.intake")

MAX_INPUTS = 32


MAX_CUSTOM_BYTES = 256 * 1024  # algocustomdata / userdata, each, as JSON
MAX_CUSTOM_DEPTH = 32


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of a JSON value, counted iteratively and only up to `limit + 1`."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if deepest > limit:
            break
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
    return deepest


def _userdata(value: Any, path: str) -> Any:
    """userdata may be an object or a JSON string of one (ocean.py sends both). Bounded in size
    and depth: it is stored with the job and read back on every status request."""
    if isinstance(value, str) and value:
        if len(value) > MAX_CUSTOM_BYTES:
            raise BadRequest(f"{path} is larger than {MAX_CUSTOM_BYTES // 1024} KiB", "invalid", path)
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            raise BadRequest(f"{path} must be JSON", "invalid", path) from None
    if value is None:
        return None
    if _depth(value, MAX_CUSTOM_DEPTH) > MAX_CUSTOM_DEPTH:
        raise BadRequest(f"{path} is nested deeper than {MAX_CUSTOM_DEPTH} levels", "invalid", path)
    if len(json.dumps(value)) > MAX_CUSTOM_BYTES:
        raise BadRequest(f"{path} is larger than {MAX_CUSTOM_BYTES // 1024} KiB", "invalid", path)
    return value


def readable_by(path: str, job_ids: tuple[int, int]) -> bool:
    """Whether the job's uid:gid can read a file that will be bind-mounted into its container
    (checked on the file itself, never through a symbolic link)."""
    uid, gid = job_ids
    fd = open_no_follow(path)
    try:
        return mode_readable_by(os.fstat(fd), uid, gid)
    finally:
        os.close(fd)


def _files_of(catalog: Catalog, asset: Asset, service: dict[str, Any], res: str,
              settings: Settings) -> list[AssetFile]:
    # Consumers read these messages: they name the DID and the file's index, never a path or URL
    # of the operator's (the details go to the daemon's log).
    files = service.get("files") or []
    if not files:
        raise PolicyRejected(f"{asset.did}: service {service.get('id')!r} lists no files", "file_unavailable", res)
    resolved: list[AssetFile] = []
    for index, entry in enumerate(files):
        try:
            resolved.append(asset_file(catalog.resolve_file(entry)))
        except AssetError as exc:
            log.warning("%s file %d refused: %s", asset.did, index, exc)
            raise PolicyRejected(f"{asset.did}: file {index} {exc.public}", "file_unavailable", res) from None
    for index, f in enumerate(resolved):
        try:
            readable = not isinstance(f, LocalFile) or readable_by(f.path, settings.job_ids)
        except OSError as exc:  # changed since resolve_file looked at it
            log.warning("%s file %d refused: %s", asset.did, index, exc)
            raise PolicyRejected(f"{asset.did}: file {index} cannot be used", "file_unavailable", res) from None
        if not readable:
            # Caught here, not as a confusing PermissionError inside the algorithm.
            raise PolicyRejected(f"{asset.did}: file {index} of this asset is not readable by jobUser "
                                 f"{settings.jobUser} (the operator can fix it with chmod o+r)", "file_unavailable",
                                 res)
    return resolved


def _ref(item: dict[str, Any]) -> tuple[str, str]:
    return str(item.get("documentId", "")).lower(), str(item.get("serviceId", ""))


def _merge_datasets_list(listed: Any, dataset: dict[str, Any], extra: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """ocean.js >= 4 (and ocean-node's clients) send `datasets: [A, B, …]` beside `dataset: A`.
    `datasets[1:]` are additional inputs, exactly like `additionalDatasets`; a list that disagrees
    with `dataset` or `additionalDatasets` is refused, so no input is ever dropped or guessed."""
    if listed is None:
        return extra
    if not isinstance(listed, list) or not listed or not all(isinstance(d, dict) for d in listed):
        raise BadRequest("datasets must be a non-empty list of dataset objects", "invalid", "datasets")
    if _ref(listed[0]) != _ref(dataset):
        raise BadRequest("datasets[0] must be the same dataset and service as `dataset`", "invalid", "datasets")
    rest = listed[1:]
    if extra and [_ref(d) for d in extra] != [_ref(d) for d in rest]:
        raise BadRequest("datasets[1:] and additionalDatasets name different inputs; send one of them",
                         "invalid", "datasets")
    return extra or rest


class Intake:
    def __init__(self, settings: Settings, catalog: Catalog, clock: Clock = SYSTEM):
        self.settings = settings
        self.catalog = catalog
        self.clock = clock  # dateCreated, from which the queue wait (queueMaxWaitTime) counts

    def build(self, params: dict[str, Any], owner: str) -> PlannedJob:
        environment = text(params, "environment", required=True)
        env = self.settings.environment(environment)
        if env is None:
            known = ", ".join(e.id for e in self.settings.environments)
            raise BadRequest(f"environment {environment!r} does not exist; known: {known}",
                             "invalid_environment", "environment")
        dataset = params.get("dataset")
        if not isinstance(dataset, dict):
            raise BadRequest("dataset must be an object {documentId, serviceId, transferTxId}", "missing", "dataset")
        extra = params.get("additionalDatasets", [])
        if extra is None:
            extra = []
        if not isinstance(extra, list) or not all(isinstance(d, dict) for d in extra):
            raise BadRequest("additionalDatasets must be a list of dataset objects", "invalid", "additional_input")
        extra = _merge_datasets_list(params.get("datasets"), dataset, extra)
        if len(extra) + 1 > MAX_INPUTS:
            raise BadRequest(f"at most {MAX_INPUTS} datasets per job", "invalid", "additionalDatasets")
        algorithm = params.get("algorithm")
        if not isinstance(algorithm, dict):
            raise BadRequest("algorithm must be an object with documentId or meta", "missing_meta_documentId",
                             "algorithm")

        algo, algo_asset = self._algorithm(algorithm)
        inputs, inputs_allow_network = [], []
        for i, item in enumerate([dataset, *extra]):
            res = "dataset" if i == 0 else f"datasets[{i}]"
            plan, allow_network, verified = self._input(item, res, i == 0, algo, algo_asset)
            inputs.append(plan)
            inputs_allow_network.append(allow_network)
            if verified and isinstance(algo.code, LocalFile):  # the workspace checks the file it pins against it
                algo = replace(algo, code=replace(algo.code, sha256=verified))
        if algo_asset is None:  # the consumer chose the image; a published algorithm's is the operator's
            self._check_raw_image(algo.container, env)

        dids = [i.did for i in inputs]
        if len(set(dids)) != len(dids):  # each input gets its own /data/inputs/<did> folder
            raise BadRequest("the same dataset is given twice (dataset and additionalDatasets)", "invalid",
                             "additionalDatasets")
        return PlannedJob(
            job_id=uuid.uuid4().hex,
            owner=owner,
            document_id=dids[0],
            environment=env.id,
            agreement_id=text(dataset, "transferTxId", required=True, path="dataset.transferTxId"),
            algo_did=algo.did or "raw",
            input_dids=dids,
            date_created=self.clock.now(),
            plan=JobPlan(
                inputs=tuple(inputs),
                algorithm=algo,
                network=env.allowNetwork and all(inputs_allow_network),
                secret=secrets.token_hex(16),
            ),
        )

    # -- algorithm ----------------------------------------------------------------------------

    def _algorithm(self, algorithm: dict[str, Any]) -> tuple[AlgorithmPlan, Asset | None]:
        meta = algorithm.get("meta")
        custom = _userdata(algorithm.get("algocustomdata"), "algorithm.algocustomdata")
        userdata = _userdata(algorithm.get("userdata") or algorithm.get("algouserdata"), "algorithm.userdata")
        if meta:  # `meta` wins over documentId
            if not isinstance(meta, dict):
                raise BadRequest("algorithm.meta must be an object", "invalid", "algorithm.meta")
            rawcode, url = meta.get("rawcode"), meta.get("url")
            if isinstance(rawcode, str) and rawcode:
                code: RawCode | RemoteFile = RawCode(rawcode)
            elif isinstance(url, str) and url.startswith(("http://", "https://")):
                # The consumer's URL: the provision step fetches it under the strict public-only
                # rule, never with the operator's provisionAllow.
                code = RemoteFile(url, None, origin="consumer")
            else:
                raise BadRequest("algorithm.meta needs rawcode or an http(s) url", "meta_oneof_url_rawcode_remote",
                                 "algorithm")
            container = self._container(meta.get("container"))
            return AlgorithmPlan(None, None, code, container, custom, userdata), None

        did = text(algorithm, "documentId", path="algorithm.documentId")
        if not did:
            raise BadRequest("algorithm needs documentId or meta", "missing_meta_documentId", "algorithm")
        asset = self.catalog.get(did) if DID_RE.fullmatch(did) else None
        if asset is None:
            raise PolicyRejected(f"algorithm {did} is not in this node's catalog", "did_not_found", "algorithm")
        if asset.type != "algorithm":
            raise PolicyRejected(f"{did} is a {asset.type}, not an algorithm", "not_algo", "algorithm")
        service_id = text(algorithm, "serviceId", required=True, path="algorithm.serviceId")
        service = asset.service(service_id)
        if service is None:
            raise PolicyRejected(f"{did} has no service {service_id!r}", "not_found", "algorithm.serviceId")
        files = _files_of(self.catalog, asset, service, "algorithm", self.settings)
        if len(files) != 1:
            raise PolicyRejected(f"{did}: an algorithm service must list exactly one file", "file_unavailable",
                                 "algorithm")
        container = self._container(asset.ddo.get("metadata", {}).get("algorithm", {}).get("container"))
        return AlgorithmPlan(asset.did, asset.public_ddo(), files[0], container, custom, userdata), asset

    @staticmethod
    def _container(container: Any) -> AlgorithmContainer:
        if not isinstance(container, dict):
            raise BadRequest("algorithm container {entrypoint, image, tag, checksum} is required",
                             "missing_entrypoint_image_checksum", "algorithm.container")
        entrypoint, image = container.get("entrypoint"), container.get("image")
        tag, checksum = container.get("tag") or "", container.get("checksum") or ""
        if not (isinstance(entrypoint, str) and entrypoint.strip() and isinstance(image, str) and image.strip()):
            raise BadRequest("algorithm container needs a non-empty entrypoint and image",
                             "missing_entrypoint_image_checksum", "algorithm.container")
        if not isinstance(tag, str) or not isinstance(checksum, str) or len(image) > 256 or len(tag) > 128:
            raise BadRequest("algorithm container tag and checksum must be strings", "invalid", "algorithm.container")
        if checksum and imageref.digest(checksum) is None:
            raise BadRequest("algorithm container checksum must be sha256:<64 hex digits>", "checksum_prefix",
                             "algorithm.container")
        try:
            imageref.from_parts(image.strip(), tag, checksum.lower())
        except ValueError as exc:
            raise BadRequest(f"algorithm container image is not a valid image name and tag: {exc}", "invalid",
                             "algorithm.container") from None
        if len(entrypoint) > 4096:
            raise BadRequest("algorithm entrypoint is too long", "invalid", "algorithm.container")
        try:
            algorithm_command(entrypoint)
        except ValueError as exc:
            raise BadRequest(f"algorithm entrypoint cannot be split into arguments: {exc}", "invalid",
                             "algorithm.container") from None
        return AlgorithmContainer(entrypoint, image.strip(), tag, checksum.lower())

    def _check_raw_image(self, container: AlgorithmContainer, env: Environment) -> None:
        """A raw algorithm runs only an image the environment lists, and never makes dockerd contact
        a registry on this host or its network (dockerd pulls as root from the host's network)."""
        ref = imageref.from_parts(container.image, container.tag, container.checksum)
        if not imageref.allowed_by(ref, env.rawAlgorithmImages):
            raise PolicyRejected(f"environment {env.id!r} does not allow the image {ref.reference} for raw "
                                 "algorithms (the operator lists the allowed ones in rawAlgorithmImages)",
                                 "image_not_allowed", "algorithm.container.image")
        refused = imageref.registry_refusal(ref, self.settings.registryAllow)
        if refused:
            raise PolicyRejected(f"the image {ref.reference} is refused: {refused} (an operator can allow the "
                                 "registry with registryAllow)", "registry_not_allowed", "algorithm.container.image")

    # -- inputs -------------------------------------------------------------------------------

    def _input(self, item: dict[str, Any], res: str, main: bool, algo: AlgorithmPlan,
               algo_asset: Asset | None) -> tuple[InputPlan, bool, str | None]:
        """Every input must be an asset of type dataset, named through a compute service, and
        passes that service's own compute policy. An additional input named through an access
        service is taken only with `accessInputs: true`, and then still under the policy of every
        compute service the dataset has (docs/operator-guide.md, "Which inputs a job may have").
        Returns the input, whether it allows the algorithm network access, and the algorithm
        files' checksum if a policy had it verified."""
        did = text(item, "documentId", required=True, path=f"{res}.documentId")
        text(item, "serviceId", required=True, path=f"{res}.serviceId")
        if main:
            text(item, "transferTxId", required=True, path=f"{res}.transferTxId")
        asset = self.catalog.get(did) if DID_RE.fullmatch(did) else None
        if asset is None:
            raise PolicyRejected(f"dataset {did} is not in this node's catalog", "did_not_found", f"{res}.documentId")
        if asset.type != "dataset":  # an algorithm's code is not data a job may read
            raise PolicyRejected(f"{did} is a {asset.type}, not a dataset", "not_dataset", f"{res}.documentId")
        service = asset.service(str(item["serviceId"]))
        if service is None:
            raise PolicyRejected(f"{did} has no service {item['serviceId']!r}", "not_found", f"{res}.serviceId")
        kind = service.get("type")
        if kind not in ("compute", "access"):
            raise PolicyRejected(f"{did}: service {item['serviceId']!r} is neither compute nor access",
                                 "service_not_access_compute", f"{res}.serviceId")
        if main and kind != "compute":
            raise PolicyRejected(f"{did}: the main dataset must be ordered through a compute service",
                                 "main_service_compute", f"{res}.serviceId")
        if kind == "compute":
            policies = [service.get("compute") or {}]
        elif not self.settings.accessInputs:
            raise PolicyRejected(f"{did}: service {item['serviceId']!r} is an access service; this node takes "
                                 f"only inputs offered for compute", "not_compute", f"{res}.serviceId")
        else:
            # Opted in: the dataset's compute services still rule what may read it. A dataset with
            # none is offered for download only, which Provider lets any algorithm read.
            policies = [s.get("compute") or {} for s in asset.ddo.get("services", []) if s.get("type") == "compute"]
        verified = None
        for compute in policies:
            verified = self._check_policy(compute, res, algo, algo_asset) or verified
        files = _files_of(self.catalog, asset, service, res, self.settings)
        userdata = _userdata(item.get("userdata"), f"{res}.userdata")
        try:  # a guard that does not parse refuses the job: it must never mean "no guard"
            guard = egress.merge([egress.parse(c) for c in policies])
        except ValueError as exc:
            raise PolicyRejected(f"{did}: {exc}", "invalid_egress_guard", f"{res}.documentId") from None
        plan = InputPlan(asset.did, asset.public_ddo(), tuple(files), userdata, guard.public() if guard else None)
        # An input with no compute policy never widens the algorithm's network.
        allow_network = bool(policies) and all(bool(c.get("allowNetworkAccess", False)) for c in policies)
        return plan, allow_network, verified

    def _check_policy(self, compute: dict[str, Any], res: str, algo: AlgorithmPlan,
                      algo_asset: Asset | None) -> str | None:
        """Refuse what the policy does not allow; the algorithm files' checksum if it was checked."""
        if algo_asset is None:
            if not compute.get("allowRawAlgorithm", False):
                raise PolicyRejected("this dataset does not allow raw algorithms (algorithm.meta)",
                                     "no_raw_algo_allowed", res)
            return None
        publishers = compute.get("publisherTrustedAlgorithmPublishers") or []
        if publishers and "*" not in publishers and algo_asset.owner.lower() not in {
                str(p).lower() for p in publishers}:
            raise PolicyRejected(f"algorithm publisher {algo_asset.owner or '(none)'} is not trusted by this dataset",
                                 "not_trusted_algo_publisher", res)
        trusted = compute.get("publisherTrustedAlgorithms") or []
        if not trusted or "*" in trusted:
            return None  # Provider v2: both lists empty = any published algorithm
        entry = None
        for candidate in trusted:
            if not isinstance(candidate, dict) or not candidate.get("did"):
                raise PolicyRejected("a publisherTrustedAlgorithms entry has no did", "no_publisherTrustedAlgorithms",
                                     res)
            if str(candidate["did"]).lower() == algo_asset.did:
                entry = candidate
        if entry is None:
            raise PolicyRejected(f"algorithm {algo_asset.did} is not trusted by this dataset", "not_trusted_algo", res)
        actual = None
        if entry.get("filesChecksum"):
            try:
                actual = self.catalog.sha256_of(file_dict(algo.code))
            except OSError as exc:
                log.warning("algorithm %s: checksum failed: %s", algo_asset.did, exc)
                actual = None
            if actual is None:
                raise PolicyRejected("the algorithm's files checksum cannot be computed", "file_unavailable",
                                     "algorithm")
            if str(entry["filesChecksum"]).lower() != actual:
                raise PolicyRejected("the algorithm's files differ from the trusted checksum",
                                     "algorithm_file_checksum_mismatch", res)
        if entry.get("containerSectionChecksum"):
            section = hashlib.sha256((algo.container.entrypoint + algo.container.checksum).encode()).hexdigest()
            if str(entry["containerSectionChecksum"]).lower() != section:
                raise PolicyRejected("the algorithm's container differs from the trusted checksum",
                                     "algorithm_container_checksum_mismatch", res)
        return actual
