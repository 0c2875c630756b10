"""Signed provenance of a finished job (#15): an in-toto Statement v1 with a runnerd predicate,
signed with the node key the way Ocean wallets sign and verify.

    statement = {"_type": STATEMENT_TYPE, "subject": [...], "predicateType": PREDICATE_TYPE, "predicate": {...}}
    hash      = keccak256(canonical(statement))            # canonical: sorted keys, no spaces, UTF-8
    signature = EIP-191 personal-sign over the 32-byte hash (v = 27/28)

so anyone holding `providerAddress` checks it with eth-account alone:

    Account.recover_message(encode_defunct(primitive=keccak(canonical)), signature=sig) == providerAddress

Canonical JSON here is the RFC 8785 (JCS) form restricted to what JCS and every JSON library agree
on: objects with string keys sorted by code point, arrays, strings, integers, booleans and null,
no insignificant whitespace, non-ASCII left as UTF-8. Floats are refused (their printed form differs
between languages): times are Ocean's epoch strings, durations integer milliseconds, sizes bytes.

Pure: no I/O (the file hashing for `runnerd verify` is in cli/verify_cmd.py), nothing above
`signing` imported.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from runnerd.signing import message_hash, recover_signer, sign

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://runnerd.dev/provenance/compute-job/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
SCHEME = "eip191-keccak256-canonical-json"
RESULT_TYPE = "attestation"
FILENAME = "attestation.json"
_HEX64 = re.compile(r"[0-9a-f]{64}")


class CanonicalError(ValueError):
    """A value canonical JSON does not carry (a float, a non-string key, an unknown type)."""


def _check(value: Any, path: str) -> None:
    if value is None or isinstance(value, (bool, str)):
        return
    if isinstance(value, int):
        return
    if isinstance(value, float):
        raise CanonicalError(f"{path}: floats are not canonical; use an integer or a string")
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check(item, f"{path}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise CanonicalError(f"{path}: object keys must be strings")
            _check(item, f"{path}.{key}")
        return
    raise CanonicalError(f"{path}: {type(value).__name__} is not a JSON value")


def canonical(value: Any) -> bytes:
    """The canonical UTF-8 bytes of a JSON value (see the module docstring)."""
    _check(value, "$")
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def statement_hash(statement: dict[str, Any]) -> bytes:
    """keccak-256 of the canonical statement (signing's hash of a text with no nonce after it)."""
    return message_hash([canonical(statement).decode("utf-8")], "")


# -- the facts a statement is built from (typed, so the runner cannot forget one) ----------------


@dataclass(frozen=True)
class Digest:
    """One file's sha256 (lower-case hex) and size in bytes."""

    sha256: str
    size: int

    def __post_init__(self) -> None:
        if not _HEX64.fullmatch(self.sha256):
            raise ValueError(f"not a sha256 hex digest: {self.sha256!r}")


@dataclass(frozen=True)
class ResultDigest:
    """A published result (an output or a log), as listed in the job's `results`."""

    index: int
    filename: str
    type: str  # output | algorithmLog | configurationLog | filteringLog
    digest: Digest


@dataclass(frozen=True)
class InputDigest:
    """One input file, named as the consumer sees it (`dataset <did> file <i>`), never by a path."""

    did: str
    index: int
    source: str  # download | local
    digest: Digest | None  # None only if it could not be read (said so in the statement)


@dataclass(frozen=True)
class AlgorithmFacts:
    did: str | None  # the published algorithm's DID; None for a raw algorithm (meta)
    code_type: str  # raw | url | file
    code: Digest | None
    entrypoint: str
    image: str  # the reference the container was created from
    image_id: str  # the image id Docker ran (`sha256:…`)
    repo_digests: tuple[str, ...] = ()


@dataclass(frozen=True)
class JobFacts:
    job_id: str
    owner: str
    environment: str
    agreement_id: str
    status: int
    status_text: str
    date_created: str
    date_finished: str
    limits: dict[str, Any]  # integers and strings only (canonical JSON)
    termination: dict[str, Any] | None = None
    error: str | None = None
    timings_ms: dict[str, int] = field(default_factory=dict)  # step -> wall milliseconds
    usage: dict[str, Any] | None = None
    guard: dict[str, Any] | None = None  # the egress guard that applied, and its verdict


def _digest(d: Digest | None) -> dict[str, Any] | None:
    return None if d is None else {"sha256": d.sha256, "size": d.size}


def build_statement(job: JobFacts, algorithm: AlgorithmFacts, inputs: list[InputDigest],
                    results: list[ResultDigest], version: str) -> dict[str, Any]:
    """The in-toto Statement: subjects are the published results (by name, as the consumer
    downloads them); the predicate says what produced them."""
    subjects = [{"name": r.filename, "digest": {"sha256": r.digest.sha256}} for r in results]
    predicate = {
        "runner": {"software": "runnerd", "version": version},
        "job": {
            "jobId": job.job_id, "owner": job.owner, "environment": job.environment,
            "agreementId": job.agreement_id, "dateCreated": job.date_created, "dateFinished": job.date_finished,
            "status": job.status, "statusText": job.status_text, "error": job.error,
            "terminationDetails": job.termination, "limits": job.limits, "timingsMs": dict(job.timings_ms),
            "usage": job.usage,
        },
        "algorithm": {
            "did": algorithm.did, "code": {"type": algorithm.code_type, **(_digest(algorithm.code) or {})},
            "entrypoint": algorithm.entrypoint,
            "image": {"reference": algorithm.image, "id": algorithm.image_id,
                      "repoDigests": sorted(algorithm.repo_digests)},
        },
        "inputs": [{"did": i.did, "index": i.index, "source": i.source, **(_digest(i.digest) or {"sha256": None})}
                   for i in inputs],
        "results": [{"index": r.index, "filename": r.filename, "type": r.type, "sha256": r.digest.sha256,
                     "size": r.digest.size} for r in results],
        "egressGuard": job.guard,
    }
    return {"_type": STATEMENT_TYPE, "subject": subjects, "predicateType": PREDICATE_TYPE, "predicate": predicate}


def sign_statement(statement: dict[str, Any], private_key: str, address: str) -> dict[str, Any]:
    """The attestation document: the statement and its signature by the node key."""
    text = canonical(statement).decode("utf-8")
    # signing.sign hashes its text with keccak and signs that hash EIP-191: exactly the scheme.
    signature = sign(private_key, [text], "")
    return {"payloadType": PAYLOAD_TYPE, "statement": statement, "signatures": [
        {"keyid": address, "scheme": SCHEME, "hash": "0x" + statement_hash(statement).hex(), "sig": signature}]}


def to_bytes(document: dict[str, Any]) -> bytes:
    """The attestation as published: pretty JSON (the signature covers the canonical statement,
    not this file's layout)."""
    return (json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


@dataclass
class SignatureCheck:
    ok: bool
    signer: str | None
    problems: list[str]


def check_signature(document: Any, expected_signer: str | None = None) -> SignatureCheck:
    """Whether the document is a runnerd attestation signed by its keyid (and by `expected_signer`,
    the node's providerAddress, when given). Says what is wrong, never raises."""
    problems: list[str] = []
    if not isinstance(document, dict) or not isinstance(document.get("statement"), dict):
        return SignatureCheck(False, None, ["not an attestation: no statement object"])
    statement = document["statement"]
    if statement.get("_type") != STATEMENT_TYPE or statement.get("predicateType") != PREDICATE_TYPE:
        problems.append("the statement is not a runnerd compute-job provenance statement")
    sigs = document.get("signatures")
    if not isinstance(sigs, list) or not sigs or not isinstance(sigs[0], dict):
        return SignatureCheck(False, None, problems + ["no signature"])
    sig = sigs[0]
    if sig.get("scheme") != SCHEME:
        return SignatureCheck(False, None, problems + [f"unknown signature scheme {sig.get('scheme')!r}"])
    try:
        text = canonical(statement).decode("utf-8")
    except CanonicalError as exc:
        return SignatureCheck(False, None, problems + [f"the statement is not canonical JSON: {exc}"])
    signer = recover_signer([text], "", str(sig.get("sig", "")))
    if signer is None:
        return SignatureCheck(False, None, problems + ["the signature is malformed"])
    keyid = str(sig.get("keyid", ""))
    if signer.lower() != keyid.lower():
        problems.append(f"the signature does not match the statement (it recovers to {signer}, "
                        f"the attestation names {keyid}): the statement was changed after signing")
    if expected_signer and signer.lower() != expected_signer.lower():
        problems.append(f"signed by {signer}, not by the expected provider {expected_signer}")
    return SignatureCheck(not problems, signer, problems)


def listed_results(statement: dict[str, Any]) -> list[dict[str, Any]]:
    """The results the statement vouches for, each {index, filename, type, sha256, size}, in
    results order; entries of the wrong shape are dropped (a signed statement has none)."""
    predicate = statement.get("predicate")
    results = predicate.get("results") if isinstance(predicate, dict) else None
    out = []
    for r in results if isinstance(results, list) else ():
        if (isinstance(r, dict) and isinstance(r.get("filename"), str) and isinstance(r.get("sha256"), str)
                and isinstance(r.get("size"), int) and isinstance(r.get("type"), str)):
            out.append(r)
    return out
