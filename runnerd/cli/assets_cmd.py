"""`runnerd assets add|list|remove`: manage the local catalog (SPEC §5).

`add` prints only the new DID on stdout (DID=$(runnerd assets add data.csv)); everything else
goes to stderr. The daemon sees the change on its next request: no restart.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from runnerd.catalog import DID_RE, Catalog, did_for
from runnerd.cli.paths import add_location_flags, resolve
from runnerd.config import ConfigError, load_config


def _say(message: str) -> None:
    print(message, file=sys.stderr)


def _allowed_roots(args: argparse.Namespace, assets: Path) -> list[Path]:
    config, _, _ = resolve(args)
    roots = [assets]
    try:
        roots += [Path(r) for r in load_config(config).assetRoots]
    except ConfigError:
        pass  # no config yet: only the assets dir counts
    return [Path(os.path.realpath(r)) for r in roots]


def _place_file(source: Path, assets: Path, roots: list[Path], in_place: bool) -> str:
    """The `path` to record: the file itself if it lies under an allowed root, else a hard link
    (or, across filesystems, a copy) under <assets>/files/."""
    real = Path(os.path.realpath(source))
    if any(root == real or root in real.parents for root in roots):
        return str(real)
    if in_place:
        raise SystemExit(f"runnerd: {source} is outside the assets dir and every assetRoots entry; "
                         f"add its folder to assetRoots in environments.yaml to register it in place")
    target_dir = assets / "files"
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / f"{hashlib.sha256(str(real).encode()).hexdigest()[:12]}-{real.name}"
    target.unlink(missing_ok=True)
    try:
        os.link(real, target)
        _say(f"linked {source} into the catalog as {target}")
    except OSError:
        shutil.copy2(real, target)
        _say(f"copied {source} into the catalog as {target} (different filesystem)")
    return str(target)


def _ddo(args: argparse.Namespace, did: str, file_entry: dict[str, Any], name: str) -> dict[str, Any]:
    metadata: dict[str, Any] = {"type": args.type, "name": args.name or name, "description": args.description}
    if args.type == "algorithm":
        metadata["algorithm"] = {
            "language": args.language,
            "container": {"entrypoint": args.entrypoint, "image": args.image, "tag": args.tag,
                          "checksum": args.checksum},
        }
        service = {"id": args.service_id or "access", "type": "access", "files": [file_entry]}
    else:
        trusted = [{"did": d, "filesChecksum": "", "containerSectionChecksum": ""} for d in args.trusted_algorithm]
        service = {"id": args.service_id or "compute", "type": "compute", "files": [file_entry], "compute": {
            "allowRawAlgorithm": args.allow_raw_algorithm,
            "allowNetworkAccess": args.allow_network,
            "publisherTrustedAlgorithms": trusted,
            "publisherTrustedAlgorithmPublishers": list(args.trusted_publisher),
        }}
    return {"@context": ["https://w3id.org/did/v1"], "id": did, "version": "4.1.0", "metadata": metadata,
            "nft": {"owner": args.owner}, "services": [service]}


def _add(args: argparse.Namespace) -> int:
    _, _, assets = resolve(args)
    assets.mkdir(parents=True, exist_ok=True)
    target = args.target
    if target.startswith(("http://", "https://")):
        entry: dict[str, Any] = {"type": "url", "url": target}
        if args.sha256:
            entry["checksum"] = args.sha256.lower().removeprefix("sha256:")
        did, name = did_for(args.type, target), target.rstrip("/").rsplit("/", 1)[-1]
    else:
        source = Path(target)
        if not source.is_file():
            _say(f"runnerd: {target} is not a file (give a local file or an http(s) URL)")
            return 2
        path = _place_file(source, assets, _allowed_roots(args, assets), args.in_place)
        entry = {"type": "file", "path": path}
        did, name = did_for(args.type, str(Path(os.path.realpath(source)))), source.name
    if args.type == "algorithm" and not (args.image and args.entrypoint):
        _say("runnerd: an algorithm needs --image and --entrypoint (e.g. --image python --tag 3.12-slim "
             "--entrypoint 'python3 $ALGO')")
        return 2
    if entry["type"] == "file" and not os.stat(entry["path"]).st_mode & 0o004:
        _say(f"warning: {entry['path']} is not world-readable; jobs run as jobUser (default 65532:65532) and "
             f"are refused unless it can read the file (chmod o+r {entry['path']})")
    ddo = _ddo(args, did, entry, name)
    out = assets / f"{did.removeprefix('did:op:')}.json"
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(ddo, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, out)  # atomic: the daemon never reads half a DDO
    _say(f"registered {args.type} {name} as {did} ({out})")
    if args.type == "dataset" and not args.allow_raw_algorithm and not args.trusted_algorithm:
        _say("note: no raw algorithms are allowed on it (--allow-raw-algorithm) and no algorithm is listed as "
             "trusted, so any algorithm registered in this catalog may run on it")
    print(did)
    return 0


def _list(args: argparse.Namespace) -> int:
    _, _, assets = resolve(args)
    catalog = Catalog(assets)
    for did, asset in sorted(catalog.assets().items()):
        print(f"{did}  {asset.type:9}  {asset.ddo.get('metadata', {}).get('name', '')}")
    for problem in catalog.problems():
        _say(f"skipped: {problem}")
    return 0


def _remove(args: argparse.Namespace) -> int:
    _, _, assets = resolve(args)
    if not DID_RE.fullmatch(args.did):
        _say(f"runnerd: {args.did} is not a DID (did:op:<64 hex>)")
        return 2
    asset = Catalog(assets).get(args.did)
    if asset is None:
        _say(f"runnerd: {args.did} is not in the catalog at {assets}")
        return 1
    Path(asset.source).unlink()
    _say(f"removed {args.did}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    assets = sub.add_parser("assets", help="manage the local asset catalog (datasets and algorithms)")
    verbs = assets.add_subparsers(dest="verb", metavar="VERB", required=True)

    add = verbs.add_parser("add", help="register a local file or an http(s) URL; prints its DID",
                           description="Register a dataset or algorithm. A local file outside the assets dir "
                                       "and assetRoots is hard-linked (or copied) into <assets>/files/.")
    add_location_flags(add)
    add.add_argument("target", metavar="PATH-or-URL")
    add.add_argument("--type", choices=["dataset", "algorithm"], default="dataset")
    add.add_argument("--name", default="", help="display name (default: the file name)")
    add.add_argument("--description", default="")
    add.add_argument("--service-id", default="", help="service id (default: compute for datasets, access for "
                                                      "algorithms)")
    add.add_argument("--sha256", default="", help="for a URL: the file's sha256; provisioning verifies it")
    add.add_argument("--in-place", action="store_true", help="never link or copy; fail unless the file lies "
                                                             "under the assets dir or an assetRoots entry")
    add.add_argument("--owner", default="", help="publisher address (nft.owner), checked by "
                                                 "publisherTrustedAlgorithmPublishers")
    policy = add.add_argument_group("dataset compute policy")
    policy.add_argument("--allow-raw-algorithm", action="store_true", help="allow algorithm.meta (rawcode/url)")
    policy.add_argument("--allow-network", action="store_true", help="allowNetworkAccess for algorithms")
    policy.add_argument("--trusted-algorithm", action="append", default=[], metavar="DID")
    policy.add_argument("--trusted-publisher", action="append", default=[], metavar="ADDRESS")
    algo = add.add_argument_group("algorithm container")
    algo.add_argument("--image", default="")
    algo.add_argument("--tag", default="latest")
    algo.add_argument("--entrypoint", default="", help="e.g. 'python3 $ALGO'")
    algo.add_argument("--checksum", default="", help="sha256:<digest> pins the image")
    algo.add_argument("--language", default="")
    add.set_defaults(func=_add)

    lst = verbs.add_parser("list", help="list registered assets and report malformed DDO files")
    add_location_flags(lst)
    lst.set_defaults(func=_list)

    rm = verbs.add_parser("remove", help="unregister an asset (its files are left alone)")
    add_location_flags(rm)
    rm.add_argument("did")
    rm.set_defaults(func=_remove)
