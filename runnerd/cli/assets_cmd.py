"""`runnerd assets add|list|remove`: manage the local catalog (SPEC §5).

`add` prints only the new DID on stdout (DID=$(runnerd assets add data.csv)); everything else
goes to stderr. The daemon sees the change on its next request: no restart.

Identity: the DID is derived from the asset's kind and its real path (or URL), so adding the same
file again names the same asset; a different DDO for it (another policy) is refused unless
`--replace` says so, because a silent replacement would drop the data owner's policy.
"""

from __future__ import annotations

import argparse
import hashlib
import ipaddress
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from runnerd.catalog import ADDRESS_RE, DID_RE, Catalog, did_for
from runnerd.cli.paths import add_location_flags, resolve
from runnerd.config import ConfigError, Settings, load_config


def _say(message: str) -> None:
    print(message, file=sys.stderr)


def _allowed_roots(assets: Path, settings: Settings | None) -> list[Path]:
    roots = [assets] + ([Path(r) for r in settings.assetRoots] if settings else [])
    return [Path(os.path.realpath(r)) for r in roots]


MAX_FOLDER_FILES = 1000


def _place_file(source: Path, assets: Path, roots: list[Path], in_place: bool, copy: bool = False,
                notes: list[str] | None = None) -> str:
    """The `path` to record: the file itself if it lies under an allowed root, else a hard link
    (or, across filesystems or with `copy`, a copy) under <assets>/files/. A hard link shares the
    original's content: editing the original in place changes the dataset (`--copy` snapshots)."""
    real = Path(os.path.realpath(source))
    if not copy and any(root == real or root in real.parents for root in roots):
        return str(real)
    if in_place:
        raise SystemExit(f"runnerd: {source} is outside the assets dir and every assetRoots entry; "
                         f"add its folder to assetRoots in environments.yaml to register it in place")
    target_dir = assets / "files"
    target_dir.mkdir(parents=True, exist_ok=True)
    key = f"copy:{real}" if copy else str(real)  # a snapshot never shares a name with a link
    target = target_dir / f"{hashlib.sha256(key.encode()).hexdigest()[:12]}-{real.name}"
    target.unlink(missing_ok=True)
    try:
        if copy:
            raise OSError("copy asked for")
        os.link(real, target)
        note = f"linked {source} into the catalog as {target} (it shares the original's content; --copy snapshots it)"
    except OSError:
        shutil.copy2(real, target)
        note = f"copied {source} into the catalog as {target}" + ("" if copy else " (different filesystem)")
    if notes is not None:
        notes.append(note)
    return str(target)


def _folder_files(folder: Path) -> list[Path]:
    """A dataset of several files: every regular file under `folder`, in a stable order (they
    become /data/inputs/<did>/0, 1, …); symlinks and special files are left out, never followed."""
    found: list[Path] = []
    for top, dirs, files in os.walk(folder, followlinks=False):
        dirs.sort()
        for name in sorted(files):
            path = Path(top) / name
            if path.is_file() and not path.is_symlink():
                found.append(path)
    return found


def _url_warning(url: str, allow: list[str]) -> str | None:
    """Why the provision step will refuse this URL, when that is certain without a DNS lookup
    (runnerd never resolves names here: only the provision step does, inside its container)."""
    from runnerd.steps.netpolicy import check_address

    host = (urlsplit(url).hostname or "").lower()
    ip = "127.0.0.1" if host in ("localhost", "localhost.") else host
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        return None
    if ipaddress.ip_address(ip).is_loopback:  # even allow-listed: the container's loopback is its own
        return (f"warning: jobs will fail to fetch this URL: {host} is a loopback address, and the provision "
                f"step runs in a container, where that is the container itself. Serve the file on the runnerd "
                f"bridge's gateway address instead and list that address in provisionAllow "
                f"(docs/operator-guide.md, \"Serving data from this host\").")
    why = check_address(host, ip, allow)
    return None if why is None else f"warning: jobs will fail to fetch this URL: {why}."


def _ddo(args: argparse.Namespace, did: str, file_entries: list[dict[str, Any]], name: str) -> dict[str, Any]:
    metadata: dict[str, Any] = {"type": args.type, "name": args.name or name, "description": args.description}
    if args.type == "algorithm":
        metadata["algorithm"] = {
            "language": args.language,
            "container": {"entrypoint": args.entrypoint, "image": args.image, "tag": args.tag,
                          "checksum": args.checksum},
        }
        service = {"id": args.service_id or "access", "type": "access", "files": file_entries}
    else:
        trusted = [{"did": d, "filesChecksum": "", "containerSectionChecksum": ""} for d in args.trusted_algorithm]
        service = {"id": args.service_id or "compute", "type": "compute", "files": file_entries, "compute": {
            "allowRawAlgorithm": args.allow_raw_algorithm,
            "allowNetworkAccess": args.allow_network,
            "publisherTrustedAlgorithms": trusted,
            "publisherTrustedAlgorithmPublishers": list(args.trusted_publisher),
        }}
    ddo = {"@context": ["https://w3id.org/did/v1"], "id": did, "version": "4.1.0", "metadata": metadata,
           "nft": {"owner": args.owner}, "services": [service]}
    if args.nft_address:  # published on chain (#16): jobs must name an order of this datatoken
        ddo.update(nftAddress=args.nft_address, chainId=args.chain_id)
        service.update(datatokenAddress=args.datatoken, timeout=args.timeout)
    return ddo


def _chain_problem(args: argparse.Namespace) -> str | None:
    given = [bool(args.nft_address), bool(args.datatoken), args.chain_id is not None]
    if any(given) and not all(given):
        return "--nft-address, --datatoken and --chain-id go together (the asset's data NFT, its datatoken, its chain)"
    for flag, value in (("--nft-address", args.nft_address), ("--datatoken", args.datatoken)):
        if value and not ADDRESS_RE.fullmatch(value):
            return f"{flag} must be a 0x address (40 hex digits), got {value!r}"
    if args.timeout < 0 or (args.timeout and not args.nft_address):
        return "--timeout is the seconds an order stays usable (0: forever), for an asset with --nft-address"
    return None


def _add(args: argparse.Namespace) -> int:
    _, _, assets = resolve(args)
    assets.mkdir(parents=True, exist_ok=True)
    target = args.target
    settings = _settings(args)
    notes: list[str] = []  # said once the registration is certain
    if target.startswith(("http://", "https://")):
        entry: dict[str, Any] = {"type": "url", "url": target}
        if args.sha256:
            entry["checksum"] = args.sha256.lower().removeprefix("sha256:")
        entries = [entry]
        did, name = did_for(args.type, target), target.rstrip("/").rsplit("/", 1)[-1]
        warning = _url_warning(target, list(settings.provisionAllow) if settings else [])
        if warning:
            notes.append(warning)
    else:
        source = Path(target)
        if source.is_dir() and args.type == "dataset":
            files = _folder_files(source)
            if not files or len(files) > MAX_FOLDER_FILES:
                _say(f"runnerd: {target} holds {len(files)} regular files; a folder dataset needs 1 to "
                     f"{MAX_FOLDER_FILES}")
                return 2
        elif source.is_file():
            files = [source]
        else:
            _say(f"runnerd: {target} is not a file (give a local file, a folder of files for a dataset, or an "
                 f"http(s) URL)")
            return 2
        roots = _allowed_roots(assets, settings)
        entries = [{"type": "file", "path": _place_file(f, assets, roots, args.in_place, args.copy, notes)}
                   for f in files]
        did, name = did_for(args.type, str(Path(os.path.realpath(source)))), source.name
    problem = _chain_problem(args)
    if problem:
        _say(f"runnerd: {problem}")
        return 2
    if args.type == "algorithm" and not (args.image and args.entrypoint):
        _say("runnerd: an algorithm needs --image and --entrypoint (e.g. --image python --tag 3.12-slim "
             "--entrypoint 'python3 $ALGO')")
        return 2
    for entry in entries:
        if entry["type"] == "file" and not os.stat(entry["path"]).st_mode & 0o004:
            notes.append(f"warning: {entry['path']} is not world-readable; jobs run as jobUser "
                         f"(default 65532:65532) and "
                 f"are refused unless it can read the file (chmod o+r {entry['path']})")
    ddo = _ddo(args, did, entries, name)
    out = assets / f"{did.removeprefix('did:op:')}.json"
    if out.exists() and not args.replace:
        try:
            old = json.loads(out.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = None
        if old == ddo:
            _say(f"{name} is already registered as {did}, unchanged")
            print(did)
            return 0
        _say(f"runnerd: {name} is already registered as {did} with another DDO ({_policy(old)} -> "
             f"{_policy(ddo)}); pass --replace to overwrite it, or `runnerd assets remove {did}` first")
        return 1
    for note in notes:
        _say(note)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(ddo, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, out)  # atomic: the daemon never reads half a DDO
    _say(f"registered {args.type} {name} as {did} ({out}; {len(entries)} file(s); {_policy(ddo)})")
    if args.type == "dataset" and not args.allow_raw_algorithm and not args.trusted_algorithm:
        _say("note: no raw algorithms are allowed on it (--allow-raw-algorithm) and no algorithm is listed as "
             "trusted, so any algorithm registered in this catalog may run on it")
    print(did)
    return 0


def _settings(args: argparse.Namespace) -> Settings | None:
    config, _, _ = resolve(args)
    try:
        return load_config(config)
    except ConfigError:
        return None  # no config yet: defaults apply


def _policy(ddo: Any) -> str:
    """One line a data owner can check: what may run on the asset."""
    if not isinstance(ddo, dict):
        return "unreadable"
    services = ddo.get("services") or []
    compute = next((s.get("compute") or {} for s in services if isinstance(s, dict) and s.get("type") == "compute"),
                   None)
    if compute is None:
        return "access only"
    parts = ["raw code allowed" if compute.get("allowRawAlgorithm") else "no raw code"]
    trusted = compute.get("publisherTrustedAlgorithms") or []
    publishers = compute.get("publisherTrustedAlgorithmPublishers") or []
    parts.append(f"{len(trusted)} trusted algorithm(s)" if trusted else "any published algorithm")
    if publishers:
        parts.append(f"{len(publishers)} trusted publisher(s)")
    if compute.get("allowNetworkAccess"):
        parts.append("network allowed")
    if ddo.get("nftAddress"):
        parts.append(f"paid with orders on chain {ddo.get('chainId')}")
    return ", ".join(parts)


def _list(args: argparse.Namespace) -> int:
    _, _, assets = resolve(args)
    catalog = Catalog(assets)
    for did, asset in sorted(catalog.assets().items()):
        print(f"{did}  {asset.type:9}  {asset.ddo.get('metadata', {}).get('name', '')}  [{_policy(asset.ddo)}]")
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
                                       "and assetRoots is hard-linked (or copied) into <assets>/files/; a folder "
                                       "registers a dataset of all its regular files. The DID comes from the real "
                                       "path (or URL): adding the same file again names the same asset.")
    add_location_flags(add)
    add.add_argument("target", metavar="PATH-or-URL", help="a file, a folder (a dataset of several files) or a URL")
    add.add_argument("--type", choices=["dataset", "algorithm"], default="dataset")
    add.add_argument("--name", default="", help="display name (default: the file name)")
    add.add_argument("--description", default="")
    add.add_argument("--service-id", default="", help="service id (default: compute for datasets, access for "
                                                      "algorithms)")
    add.add_argument("--sha256", default="", help="for a URL: the file's sha256; provisioning verifies it")
    add.add_argument("--in-place", action="store_true", help="never link or copy; fail unless the file lies "
                                                             "under the assets dir or an assetRoots entry")
    add.add_argument("--copy", action="store_true", help="copy the file into the catalog (a snapshot) instead of "
                                                         "a hard link that shares the original's content")
    add.add_argument("--replace", action="store_true", help="overwrite an existing registration of the same "
                                                            "file or URL, even with another policy")
    add.add_argument("--owner", default="", help="publisher address (nft.owner), checked by "
                                                 "publisherTrustedAlgorithmPublishers")
    policy = add.add_argument_group("dataset compute policy")
    policy.add_argument("--allow-raw-algorithm", action="store_true", help="allow algorithm.meta (rawcode/url)")
    policy.add_argument("--allow-network", action="store_true", help="allowNetworkAccess for algorithms")
    policy.add_argument("--trusted-algorithm", action="append", default=[], metavar="DID")
    policy.add_argument("--trusted-publisher", action="append", default=[], metavar="ADDRESS")
    chain = add.add_argument_group("published on chain (paid with orders, docs/operator-guide.md \"Chain mode\")")
    chain.add_argument("--nft-address", default="", metavar="ADDRESS", help="the asset's data NFT")
    chain.add_argument("--datatoken", default="", metavar="ADDRESS", help="the service's datatoken (ERC20Template)")
    chain.add_argument("--chain-id", type=int, default=None, help="the chain the NFT lives on")
    chain.add_argument("--timeout", type=int, default=0, help="seconds an order stays usable (default 0: forever)")
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
