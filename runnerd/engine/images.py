"""Which image an algorithm runs, and getting it onto the host without blocking other jobs.

A `sha256:` checksum pins the image: a local image must match by id or by repo digest (SPEC §3).
Pulls follow `imagePull` and are de-duplicated: ten jobs waiting for one image cause one pull.
A consumer's (raw) algorithm image is checked again here against the environment's
rawAlgorithmImages and registryAllow, before anything is asked of Docker: a job queued before
the operator tightened them must not slip through.

What a job's `error` says about an image is runnerd's own fixed text; Docker's and a registry's
words go to the daemon log under a short reference the operator can grep for.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time

from typing import Any, Awaitable, Callable

from runnerd import imageref
from runnerd.containers.runtime import ContainerRuntime
from runnerd.errors import ImageMissing

log = logging.getLogger("runnerd.images")
_PRESENT_TTL = 30.0  # seconds


class Images:
    def __init__(self, runtime: ContainerRuntime, policy: str, registry_allow: tuple[str, ...] = ()):
        self.runtime = runtime
        self.policy = policy  # never | if-missing | always
        self.registry_allow = registry_allow
        self._pulls: dict[tuple[str, bool], asyncio.Task[None]] = {}
        self._seen: dict[str, float] = {}  # ref -> monotonic time it was last found present
        self._volumes: dict[str, list[str]] = {}
        # #15 image hygiene: told of each pull runnerd made (and whether the image was there
        # before) and of each use, so only runnerd's own images are ever collected, LRU.
        self.on_pulled: Callable[[str, bool], Awaitable[None]] | None = None
        self.on_used: Callable[[str], None] = lambda ref: None
        self.auth_of: Callable[[str], Any] = lambda job_id: None  # a job's RegistryAuth (engine/credentials.py)

    def auth_for(self, job_id: str) -> dict[str, str] | None:
        """The X-Registry-Auth fields for this job's pull, if it came with credentials."""
        auth = self.auth_of(job_id)
        return auth.header() if auth is not None else None

    async def _present(self, ref: str) -> bool:
        """has_image, remembered for a short while: an image found a moment ago is still there (if
        it was removed meanwhile, creating the container fails and the job ends at 32)."""
        seen = self._seen.get(ref)
        if seen is not None and time.monotonic() - seen < _PRESENT_TTL:
            return True
        present = await self.runtime.has_image(ref)
        if present:
            self._seen[ref] = time.monotonic()
        return present

    async def resolve(self, image: str, tag: str, checksum: str, allowed: tuple[str, ...] | None = None,
                      auth: dict[str, str] | None = None) -> str:
        """The reference to create the container from; raises ImageMissing with the reason.
        `allowed`: the environment's rawAlgorithmImages when the consumer chose the image (a raw
        algorithm); None for the operator's own (helperImage, published algorithms)."""
        try:
            ref = imageref.from_parts(image, tag, checksum)
        except ValueError as exc:
            raise ImageMissing(f"the image reference is not valid ({exc})") from None
        found = await self._resolve(ref, allowed, auth)
        self.on_used(found)
        return found

    async def _resolve(self, ref: imageref.ImageRef, allowed: tuple[str, ...] | None,
                       auth: dict[str, str] | None = None) -> str:
        if allowed is not None:
            if not imageref.allowed_by(ref, allowed):
                raise ImageMissing(f"image {ref.reference} is not allowed for raw algorithms in this environment")
            refused = imageref.registry_refusal(ref, self.registry_allow)
            if refused:
                raise ImageMissing(f"image {ref.reference} is refused: {refused} (registryAllow)")
            if ref.digest and not imageref.allowed_whatever_its_tag(ref, allowed):
                exact = await self._tagged_as_allowed(ref, allowed, auth)
                if exact:
                    return exact
        # A bare image id names any local image, whatever its repository: only for the operator's
        # images, or a consumer's whose digest itself is allowed.
        if ref.digest and (allowed is None or imageref.digest_listed(ref, allowed)):
            if await self._present(ref.digest):  # a local image whose id is the checksum
                return ref.digest
        name = ref.reference
        present = await self._present(name)
        if present and self.policy != "always":
            return name
        if self.policy == "never":
            raise ImageMissing(f"image {name} is not on this host and imagePull is never")
        try:
            await self._pull(name, auth, present)
        except ImageMissing as exc:
            if present:  # `always` but the registry is unreachable: the local copy still matches
                log.warning("pull of %s failed (%s %s); using the local image", name, exc, exc.detail)
                return name
            raise self._pull_failed(name, exc) from None
        if ref.digest and not await self.runtime.has_image(name):
            raise ImageMissing(f"the image {name} was pulled but no local image matches its checksum")
        return name

    async def _tagged_as_allowed(self, ref: imageref.ImageRef, allowed: tuple[str, ...],
                                 auth: dict[str, str] | None = None) -> str | None:
        """A consumer's `name` + `tag` + `checksum` allowed only through a tag pattern: the checksum
        must be the image that tag names here (fetched under imagePull if need be), or any other
        image of the repository would run by digest. Returns the image id when the checksum is
        the id itself (immutable, so nothing can move between this check and the container)."""
        tagged = imageref.ImageRef(ref.name, ref.registry, ref.repository, ref.tag or "latest")
        name = await self._resolve(tagged, allowed, auth)
        image_id, repo_digests = await self.runtime.image_digests(name)
        if ref.digest == image_id:
            return image_id
        if ref.digest not in repo_digests:
            raise ImageMissing(f"the checksum given for image {tagged.reference} is not that image's: this environment "
                               f"allows that image by its tag, so the checksum must be the tag's image")
        return None

    @staticmethod
    def _pull_failed(name: str, exc: ImageMissing) -> ImageMissing:
        """The consumer gets a fixed text; the operator finds Docker's own words by the reference."""
        reference = secrets.token_hex(4)
        log.warning("image pull failed [reference %s]: %s: %s %s", reference, name, exc, exc.detail)
        return ImageMissing(f"the image {name} could not be pulled (reference {reference} in the daemon log)")

    async def volumes(self, ref: str) -> list[str]:
        """The VOLUME paths of a present image (remembered: an image reference that stays
        present keeps its configuration for the life of the daemon, or is pinned by digest)."""
        if ref not in self._volumes:
            self._volumes[ref] = await self.runtime.image_volumes(ref)
        return self._volumes[ref]

    async def resolve_ref(self, ref: str) -> str:
        """Like resolve, for a plain reference such as helperImage ("python:3.12-slim")."""
        try:
            parsed = imageref.parse(ref)
        except ValueError as exc:
            raise ImageMissing(f"{ref!r} is not a valid image reference ({exc})") from None
        if not parsed.tag and not parsed.digest:
            parsed = imageref.ImageRef(parsed.name, parsed.registry, parsed.repository, "latest")
        return await self._resolve(parsed, None)

    async def _pull(self, ref: str, auth: dict[str, str] | None = None, present: bool = False) -> None:
        # A pull with a job's credentials is its own: sharing it with a job without them would
        # hand that job an image it may not be allowed to pull.
        key = (ref, bool(auth))
        task = self._pulls.get(key)
        if task is None:
            task = asyncio.create_task(self._pull_and_record(ref, auth, present))
            self._pulls[key] = task
            task.add_done_callback(lambda _t: self._pulls.pop(key, None))
        await asyncio.shield(task)

    async def _pull_and_record(self, ref: str, auth: dict[str, str] | None, present: bool) -> None:
        await (self.runtime.pull(ref, auth) if auth else self.runtime.pull(ref))
        if self.on_pulled is not None:
            await self.on_pulled(ref, present)
