"""Image hygiene (#15): images runnerd pulled are removed, least recently used first, once they
take more than the operator's budget (`imageCacheGB`; 0 keeps them all, as before).

Which images are runnerd's: those it pulled itself and that were not on the host before that pull
(recorded in `<data-dir>/pulled-images.json` with when each was pulled and last used). An image the
operator pulled or built by hand is never in the record, so never touched; nor is one that has a
tag besides the references runnerd pulled (someone tagged it on purpose). Never removed either:
the helper image, and any image a queued or running job needs (asked of the store each round),
and Docker itself refuses to remove an image a container still uses. Removal is by reference and
never forced, so an image that another reference still names only loses runnerd's tag.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable

from runnerd.containers.runtime import ContainerRuntime, ImageInfo
from runnerd.engine import statefile
from runnerd.errors import ImageMissing, RuntimeUnavailable

log = logging.getLogger("runnerd.images")
FILE_NAME = "pulled-images.json"


@dataclass
class Pulled:
    ref: str
    image_id: str
    pulled: float
    used: float


class ImageGC:
    def __init__(self, runtime: ContainerRuntime, data_dir: Path | None, budget_bytes: int,
                 needed: Callable[[], Awaitable[set[str]]], clock: Callable[[], float] = time.time):
        """`needed`: the references that queued and running jobs (and the helper image) need."""
        self.runtime = runtime
        self.budget = budget_bytes
        self.needed = needed
        self.clock = clock
        self._path = Path(data_dir) / FILE_NAME if data_dir is not None else None
        self._pulled: dict[str, Pulled] = {}
        self._lock = asyncio.Lock()
        self.removed: list[str] = []  # every reference removed (tests, the log)
        self._load()

    @property
    def enabled(self) -> bool:
        return self.budget > 0

    def _load(self) -> None:
        if self._path is None:
            return
        raw = statefile.read(self._path, "runnerd's pulled images are forgotten, never removed")
        for ref, v in raw.items():
            try:
                self._pulled[ref] = Pulled(ref, str(v["id"]), float(v["pulled"]), float(v["used"]))
            except (KeyError, TypeError, ValueError):
                continue

    def _save(self) -> None:
        if self._path is None:
            return
        text = json.dumps({p.ref: {"id": p.image_id, "pulled": p.pulled, "used": p.used}
                           for p in self._pulled.values()})
        statefile.write(self._path, text)

    def known(self) -> dict[str, Pulled]:
        return dict(self._pulled)

    async def pulled(self, ref: str, was_present: bool) -> None:
        """runnerd just pulled `ref`. Only an image that was not on the host before becomes runnerd's
        (`imagePull: always` re-pulls the operator's images too; those stay the operator's)."""
        if was_present and ref not in self._pulled:
            return
        try:
            image_id, _ = await self.runtime.image_digests(ref)
        except (ImageMissing, RuntimeUnavailable):
            return
        now = self.clock()
        self._pulled[ref] = Pulled(ref, image_id, now, now)
        self._save()

    def used(self, ref: str) -> None:
        """A job is about to run `ref`: the most recently used now (saved with the next change)."""
        now = self.clock()
        for p in self._pulled.values():  # by reference, or by id (a job pinned by digest runs the id)
            if p.ref == ref or p.image_id == ref:
                p.used = now

    async def collect(self) -> list[str]:
        """Remove runnerd's least recently used images until they fit the budget; returns the
        references removed. Never raises for Docker being away (the next round tries again)."""
        if not self.enabled or not self._pulled:
            return []
        async with self._lock:
            try:
                return await self._collect()
            except RuntimeUnavailable as exc:
                log.warning("image garbage collection postponed: %s", exc)
                return []

    async def _collect(self) -> list[str]:
        images = await self.runtime.list_images()
        by_id = {i.id: i for i in images}
        for ref in [r for r, p in self._pulled.items() if p.image_id not in by_id]:
            del self._pulled[ref]  # removed by someone else meanwhile
        mine = self._removable(by_id)
        total = sum(by_id[i].size for i in {p.image_id for p in mine})
        if total <= self.budget:
            self._save()
            return []
        protected = await self._protected_ids()
        removed = []
        for p in sorted(mine, key=lambda p: p.used):
            if total <= self.budget:
                break
            if p.image_id in protected:
                continue
            if await self.runtime.remove_image(p.ref):
                del self._pulled[p.ref]
                removed.append(p.ref)
                if not any(q.image_id == p.image_id for q in self._pulled.values()):
                    total -= by_id[p.image_id].size
                log.info("image %s removed: runnerd pulled it, it was the least recently used and its images "
                         "took more than imageCacheGB", p.ref)
        self.removed += removed
        self._save()
        return removed

    def _removable(self, by_id: dict[str, ImageInfo]) -> list[Pulled]:
        """runnerd's images whose every tag is one runnerd pulled (anything else is someone's)."""
        refs = {_short(r) for r in self._pulled}
        out = []
        for p in self._pulled.values():
            info = by_id[p.image_id]
            if all(_short(tag) in refs for tag in info.tags):
                out.append(p)
        return out

    async def _protected_ids(self) -> set[str]:
        ids = set()
        for ref in await self.needed():
            if ref.startswith("sha256:"):
                ids.add(ref)
                continue
            try:
                image_id, _ = await self.runtime.image_digests(ref)
            except ImageMissing:
                continue
            ids.add(image_id)
        return ids


def _short(tag: str) -> str:
    """Docker lists `docker.io/library/x:1` as `x:1`; runnerd may have pulled either spelling."""
    for prefix in ("docker.io/library/", "docker.io/"):
        if tag.startswith(prefix):
            return tag[len(prefix):]
    return tag
