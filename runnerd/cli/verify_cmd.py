"""`runnerd verify DIR`: check downloaded results against the job's signed attestation (#15).

Offline: it needs the folder `runnerd get` wrote (or any folder holding the files under their
result names) and, to know who must have signed, the node's providerAddress (`--provider`, or
`--url` to read it from the node's `GET /`). Every check that fails is printed, one line each;
exit 0 when everything matches, 1 when something does not, 2 for a mistake in the command.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

from runnerd import provenance
from runnerd.cli.safe import Names, text

_CHUNK = 1 << 20


def sha256_file(path: Path) -> tuple[str, int]:
    """(hex sha256, size) of a regular file, streamed; never follows a link (a server chose names)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file")
        digest, size = hashlib.sha256(), 0
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def saved_names(results: list[dict[str, Any]]) -> list[str]:
    """The names `runnerd get` saves these results under (outputs by filename, logs as
    `<type>-<filename>`), replayed in results order so de-duplicated names come out the same."""
    names = Names()
    return [names.add(r["filename"] if r["type"] == "output" else f"{r['type']}-{r['filename']}") for r in results]


def find_attestation(folder: Path) -> Path | None:
    for name in (f"{provenance.RESULT_TYPE}-{provenance.FILENAME}", provenance.FILENAME):
        if (folder / name).is_file():
            return folder / name
    return None


def check(folder: Path, document: dict[str, Any], provider: str | None, code: Path | None,
          image: str | None) -> tuple[list[str], list[str]]:
    """(problems, notes): every mismatch found, and what was checked."""
    sig = provenance.check_signature(document, provider)
    problems, notes = list(sig.problems), []
    if sig.signer:
        notes.append(f"signed by {sig.signer}" + ("" if provider else
                     " (pass --provider or --url to check that this is the node's providerAddress)"))
    statement = document.get("statement") if isinstance(document, dict) else None
    if not isinstance(statement, dict):
        return problems, notes
    results = provenance.listed_results(statement)
    for r, name in zip(results, saved_names(results)):
        label = f"result {r.get('index')} ({r['type']} {text(r['filename'])})"
        path = folder / name
        others = [folder / r["filename"]] + ([folder / "outputs" / r["filename"]] if r["type"] == "output" else [])
        for other in others:  # saved under its plain name by another client, or unpacked from an outputs.tar
            if not path.is_file() and other.is_file():
                path = other
        try:
            got, size = sha256_file(path)
        except FileNotFoundError:
            problems.append(f"{label}: missing (expected as {text(name)})")
            continue
        except OSError as exc:
            problems.append(f"{label}: cannot be read ({text(exc.strerror or exc)})")
            continue
        if got != r["sha256"]:
            problems.append(f"{label}: content differs (sha256 {got}, attested {r['sha256']}; "
                            f"{size} bytes, attested {r['size']})")
        else:
            notes.append(f"{label}: ok")
    algo = (statement.get("predicate") or {}).get("algorithm") or {}
    if code is not None:
        attested = (algo.get("code") or {}).get("sha256")
        got, _ = sha256_file(code)
        if got != attested:
            problems.append(f"algorithm code: {text(code)} is not the code that ran (sha256 {got}, attested "
                            f"{text(attested)})")
        else:
            notes.append("algorithm code: ok")
    if image is not None:
        ran = algo.get("image") or {}
        known = {ran.get("id"), *(ran.get("repoDigests") or [])}
        wanted = image.rpartition("@")[2] if "@" in image else image
        if wanted not in known:
            problems.append(f"image: {text(image)} is not the image that ran (id {text(ran.get('id'))}, repo digests "
                            f"{', '.join(map(text, ran.get('repoDigests') or [])) or 'none'})")
        else:
            notes.append("image: ok")
    return problems, notes


def _provider_of(url: str) -> str:
    """The node's providerAddress from its `GET /` (public, unsigned: plain stdlib HTTP)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url.rstrip("/") + "/", timeout=10) as response:
            answer = json.loads(response.read(1 << 20))
    except (OSError, ValueError, urllib.error.URLError) as exc:
        raise SystemExit(f"runnerd: cannot read the providerAddress of {text(url)}: {text(exc)}") from None
    address = answer.get("providerAddress") if isinstance(answer, dict) else None
    if not isinstance(address, str):
        raise SystemExit(f"runnerd: {text(url)} did not name a providerAddress")
    return address


def _verify(args: argparse.Namespace) -> int:
    folder = Path(args.dir)
    if not folder.is_dir():
        print(f"runnerd: {text(folder)} is not a folder (give the folder `runnerd get` saved into)", file=sys.stderr)
        return 2
    path = Path(args.attestation) if args.attestation else find_attestation(folder)
    if path is None or not path.is_file():
        print(f"runnerd: no attestation in {text(folder)} (expected {provenance.RESULT_TYPE}-{provenance.FILENAME}; "
              "jobs that ended before their algorithm ran have none)", file=sys.stderr)
        return 2
    try:
        document = json.loads(path.read_bytes())
    except ValueError as exc:
        print(f"runnerd: {text(path)} is not JSON: {text(exc)}", file=sys.stderr)
        return 1
    if args.code and not Path(args.code).is_file():
        print(f"runnerd: --code {text(args.code)} is not a file", file=sys.stderr)
        return 2
    provider = args.provider or (_provider_of(args.url) if args.url else None)
    problems, notes = check(folder, document, provider, Path(args.code) if args.code else None, args.image)
    if args.json:
        print(json.dumps({"ok": not problems, "problems": problems, "checked": notes}, indent=2))
    else:
        for line in notes:  # through `text` again: an attestation's own fields (keyid, names) reach them
            print(text(line))
        for line in problems:
            print(f"MISMATCH {text(line)}")
        print("verified: every result matches the signed attestation" if not problems
              else f"{len(problems)} mismatch(es): these results are not what the node attested")
    return 0 if not problems else 1


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("verify", help="check downloaded results against the job's signed attestation",
                       description="Check the results in DIR (as `runnerd get` saved them) against the job's "
                                   "attestation: its signature by the node key, and every result's sha256. "
                                   "Optionally also that the code and the image that ran are yours. Exit 0 when "
                                   "everything matches, 1 otherwise (each mismatch printed).")
    p.add_argument("dir", help="the folder holding the downloaded results")
    p.add_argument("--attestation", help="the attestation file (default: the one in DIR)")
    p.add_argument("--provider", help="the node's providerAddress: the attestation must be signed by it")
    p.add_argument("--url", help="read the providerAddress from this node's GET / instead")
    p.add_argument("--code", help="your algorithm file: it must be the code that ran")
    p.add_argument("--image", help="an image id or digest (sha256:…): it must be the image that ran")
    p.add_argument("--json", action="store_true", help="print {ok, problems, checked} as JSON")
    p.set_defaults(func=_verify)
