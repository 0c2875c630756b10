"""Which image an algorithm runs, and getting it onto the host without blocking other jobs.

A `sha256:` checksum pins the image: a local image must match by id or by repo digest (SPEC §3).
Pulls follow `imagePull` and are de-duplicated: ten jobs waiting for one image cause one pull.
"""

from __future__ import annotations

import asyncio
import logging
import time

from runnerd.containers.runtime import ContainerRuntime
from runnerd.containers.spec import image_reference
from runnerd.errors import ImageMissing

log = logging.getLogger("runnerd.images")
_PRESENT_TTL = 30.0  # seconds


class Images:
    def __init__(self, runtime: ContainerRuntime, policy: str):
        self.runtime = runtime
        self.policy = policy  # never | if-missing | always
        self._pulls: dict[str, asyncio.Task[None]] = {}
        self._seen: dict[str, float] = {}  # ref -> monotonic time it was last found present
        self._volumes: dict[str, list[str]] = {}

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

    async def resolve(self, image: str, tag: str, checksum: str) -> str:
        """The reference to create the container from; raises ImageMissing with the reason."""
        if checksum:
            if await self._present(checksum):  # a local image whose id is the checksum
                return checksum
            ref = f"{image}@{checksum}"
        else:
            ref = image_reference(image, tag, checksum)
        present = await self._present(ref)
        if present and self.policy != "always":
            return ref
        if self.policy == "never":
            raise ImageMissing(f"image {ref} is not on this host and imagePull is never "
                               f"(an operator can load it with docker load / docker pull)")
        try:
            await self._pull(ref)
        except ImageMissing:
            if present:  # `always` but the registry is unreachable: the local copy still matches
                log.warning("pull of %s failed; using the local image", ref)
                return ref
            raise
        if checksum and not await self.runtime.has_image(ref):
            raise ImageMissing(f"pulled {image} but no local image matches {checksum}")
        return ref

    async def volumes(self, ref: str) -> list[str]:
        """The VOLUME paths of a present image (remembered: an image reference that stays
        present keeps its configuration for the life of the daemon, or is pinned by digest)."""
        if ref not in self._volumes:
            self._volumes[ref] = await self.runtime.image_volumes(ref)
        return self._volumes[ref]

    async def resolve_ref(self, ref: str) -> str:
        """Like resolve, for a plain reference such as helperImage ("python:3.12-slim")."""
        name, _, tag = ref.rpartition(":")
        if not name or "/" in tag:  # no tag (a registry port is not one)
            name, tag = ref, "latest"
        return await self.resolve(name, tag, "")

    async def _pull(self, ref: str) -> None:
        task = self._pulls.get(ref)
        if task is None:
            task = asyncio.create_task(self.runtime.pull(ref))
            self._pulls[ref] = task
            task.add_done_callback(lambda _t: self._pulls.pop(ref, None))
        await asyncio.shield(task)
