"""Image references: the one parser (Docker's grammar: `[host[:port]/]path[:tag][@sha256:…]`), and
the checks runnerd applies to images a consumer names (a raw algorithm's `container`).

Pure and dependency-free: config, intake, the image resolver and the Docker runtime all read
references through here, so they cannot disagree about which part is the registry host.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from fnmatch import fnmatchcase

DOCKER_HUB = "docker.io"
_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io"}
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"  # one path component (distribution/reference)
_PATH = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_DOMAIN = re.compile(r"(?:\[[0-9a-fA-F:.%]+\]|[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
                     r"(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*)(?::[0-9]{1,5})?")
TAG = re.compile(r"[\w][\w.-]{0,127}")
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
MAX_NAME = 255
# Names that resolve to this host or its LAN by convention (RFC 6761/6762/8375, common practice).
_LOCAL_SUFFIXES = (".localhost", ".local", ".localdomain", ".internal", ".home.arpa", ".lan")


@dataclass(frozen=True)
class ImageRef:
    name: str  # as written, without tag or digest: what Docker is asked for
    registry: str  # lower-case host[:port]; "docker.io" when the name has none
    repository: str  # the path on that registry ("library/python" for "python")
    tag: str = ""
    digest: str = ""

    @property
    def reference(self) -> str:
        """What Docker is given: `name@digest` when a digest pins it (Docker ignores a tag then), else `name:tag`."""
        if self.digest:
            return f"{self.name}@{self.digest}"
        return f"{self.name}:{self.tag or 'latest'}"

    @property
    def canonical(self) -> str:
        """registry/repository, the form image policies are matched in."""
        return f"{self.registry}/{self.repository}"

    @property
    def host(self) -> str:
        """The registry host without its port (an IPv6 literal without brackets)."""
        host = self.registry
        if host.startswith("["):
            return host[1:host.index("]")]
        return host.rsplit(":", 1)[0] if ":" in host else host

    @property
    def has_registry(self) -> bool:
        return self.registry != DOCKER_HUB


def split_name(name: str) -> tuple[str, str]:
    """(registry, repository) as Docker splits a name: the first component is a registry host
    only if it has a `.` or `:` or is `localhost`; a bare Docker Hub name gains `library/`."""
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        registry, path = first.lower(), rest
        if registry in _HUB_ALIASES:
            registry = DOCKER_HUB
    else:
        registry, path = DOCKER_HUB, name
    if registry == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    return registry, path


def parse_name(name: str) -> tuple[str, str]:
    """Validate an image name (no tag, no digest); returns (registry, repository). Raises ValueError."""
    if not name or len(name) > MAX_NAME:
        raise ValueError(f"an image name has 1 to {MAX_NAME} characters")
    registry, path = split_name(name)
    if registry != DOCKER_HUB and not _DOMAIN.fullmatch(registry):
        raise ValueError(f"{registry!r} is not a valid registry host")
    if not _PATH.fullmatch(path):
        raise ValueError("an image name is lower-case letters, digits and . _ - separators, joined by /")
    return registry, path


def parse(reference: str) -> ImageRef:
    """Parse `[host[:port]/]path[:tag][@sha256:<64 hex>]`. Raises ValueError naming the problem."""
    rest, _, digest = reference.partition("@")
    if "@" in reference and not DIGEST.fullmatch(digest):
        raise ValueError("a digest is sha256:<64 lower-case hex digits>")
    name, tag = rest, ""
    last = rest.rsplit("/", 1)[-1]
    if ":" in last and not last.startswith("["):  # a colon after the last / is a tag (before it, a port)
        name, _, tag = rest.rpartition(":")
        if not TAG.fullmatch(tag):
            raise ValueError("a tag is up to 128 letters, digits, _ . and - (not starting with . or -)")
    registry, repository = parse_name(name)
    return ImageRef(name, registry, repository, tag, digest)


def from_parts(image: str, tag: str, checksum: str) -> ImageRef:
    """An Ocean `container` section's image, tag and checksum as one reference (the checksum, a
    `sha256:` digest, pins it). The image must be a name only; its tag goes in `tag`."""
    if tag and not TAG.fullmatch(tag):
        raise ValueError("a tag is up to 128 letters, digits, _ . and - (not starting with . or -)")
    if checksum and not DIGEST.fullmatch(checksum):
        raise ValueError("a checksum is sha256:<64 lower-case hex digits>")
    registry, repository = parse_name(image)
    return ImageRef(image, registry, repository, tag or "latest", checksum)


def digest(text: str) -> str | None:
    """A `sha256:` digest as Docker writes it (the hex digits lower-cased; Ocean DDOs may carry
    upper-case ones), or None if `text` is not one."""
    if not text.startswith("sha256:"):
        return None
    lowered = "sha256:" + text[7:].lower()
    return lowered if DIGEST.fullmatch(lowered) else None


def join(image: str, tag: str, checksum: str) -> str:
    """The reference string for stored parts, without validating them (they were at intake)."""
    if checksum.startswith("sha256:"):
        return f"{image}@{checksum}"
    return f"{image}:{tag or 'latest'}"


# -- which images a consumer may name -------------------------------------------------------------

def _glob(pattern: str, value: str) -> bool:
    """`*` matches within one path component (so `ghcr.io/acme/*` is not `ghcr.io/acme/x/y`)."""
    return re.fullmatch("[^/]*".join(re.escape(part) for part in pattern.split("*")), value) is not None


def check_pattern(pattern: str) -> None:
    """Validate one rawAlgorithmImages entry; raises ValueError."""
    if pattern == "*" or DIGEST.fullmatch(pattern):
        return
    probe = pattern.replace("*", "x")
    try:
        parse(probe)
    except ValueError as exc:
        raise ValueError(f"must be *, sha256:<digest> or an image name with an optional tag pattern ({exc})") \
            from None


def _pattern_parts(pattern: str) -> tuple[str, str, str]:
    rest, _, digest = pattern.partition("@")
    name, tag = rest, "*"
    if ":" in rest.rsplit("/", 1)[-1]:
        name, _, tag = rest.rpartition(":")
    registry, repository = split_name(name)
    return f"{registry}/{repository}", tag, digest


def _allowed(ref: ImageRef, patterns: tuple[str, ...] | list[str], by_tag: bool) -> bool:
    for pattern in patterns:
        if pattern == "*" or (ref.digest and pattern == ref.digest):
            return True
        if DIGEST.fullmatch(pattern):
            continue
        name, tag, digest = _pattern_parts(pattern)
        if not _glob(name, ref.canonical):
            continue
        tag_ok = fnmatchcase(ref.tag or "latest", tag) if by_tag else tag == "*"
        if (tag_ok or (digest and not by_tag)) and (not digest or digest == ref.digest):
            return True
    return False


def allowed_by(ref: ImageRef, patterns: tuple[str, ...] | list[str]) -> bool:
    """Whether a consumer's image is on an environment's rawAlgorithmImages list: `*` (any),
    `sha256:<digest>` (exactly that image, whatever it is called), or `name[:tag-glob][@digest]`
    (a name alone allows every tag; a digest pins the entry to one image)."""
    return _allowed(ref, patterns, by_tag=True)


def allowed_whatever_its_tag(ref: ImageRef, patterns: tuple[str, ...] | list[str]) -> bool:
    """Whether an image pinned by digest is allowed by an entry that does not depend on its tag.
    With a digest Docker runs `name@digest` and ignores the tag, so an entry like
    `acme/runtime:public-*` cannot vouch for it alone: the digest must then be shown to be that
    tag's image (engine/images.py checks it against the tag's local image)."""
    return _allowed(ref, patterns, by_tag=False)


def digest_listed(ref: ImageRef, patterns: tuple[str, ...] | list[str]) -> bool:
    """Whether the reference's digest itself is allowed (`*` or a listed `sha256:`): only then may
    it name a local image by its id alone, whatever repository that image belongs to."""
    return bool(ref.digest) and any(p == "*" or p == ref.digest for p in patterns)


def _numeric_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """inet_aton's forms (127.1, 2130706433, 0x7f.0.0.1, 0177.0.0.1): getaddrinfo accepts them,
    so a resolver may turn such a 'host name' into an address."""
    parts = host.split(".")
    if not 1 <= len(parts) <= 4 or not all(re.fullmatch(r"0[xX][0-9a-fA-F]*|[0-9]+", p) for p in parts):
        return None
    try:
        values = [int(p, 16) if p[:2].lower() == "0x" else int(p, 8) if len(p) > 1 and p[0] == "0" else int(p)
                  for p in parts]
    except ValueError:
        return None  # e.g. 08: not octal, and not an address either
    *head, last = values
    if any(v > 255 for v in head) or last >= 256 ** (5 - len(values)):
        return None
    number = 0
    for v in head:
        number = number * 256 + v
    return ipaddress.IPv4Address(number * 256 ** (4 - len(head)) + last)


def host_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a registry host literally is (any IPv4/IPv6 literal form), else None."""
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return _numeric_ipv4(host)


def registry_refusal(ref: ImageRef, allow: tuple[str, ...] | list[str]) -> str | None:
    """Why runnerd will not let Docker contact this reference's registry, or None. IP literals,
    localhost and local-only or single-label names are refused unless `allow` (registryAllow)
    names the host, host:port, address or network. Other names are resolved by dockerd itself,
    so where they point cannot be checked here."""
    if not ref.has_registry:
        return None
    host = ref.host.lower()
    address = host_address(host)
    for entry in allow:
        entry = entry.lower()
        if entry in (host, ref.registry):
            return None
        if address is not None:
            try:
                if address in ipaddress.ip_network(entry, strict=False):
                    return None
            except ValueError:
                pass
    if address is not None:
        return "its registry host is an IP address"
    if host == "localhost" or host.endswith(_LOCAL_SUFFIXES):
        return "its registry host is a local name"
    if "." not in host:
        return "its registry host is a single-label (local network) name"
    return None
