"""FakeRuntime: an honest in-memory implementation of runnerd's ContainerRuntime protocol
(runnerd/containers/runtime.py), for driving the engine through failures real Docker cannot produce
on demand. tests/test_runtime_contract.py runs the same contract suite against it and against
DockerRuntime, so what the fake does is what Docker does (as far as runnerd can observe).

Scripting a container's life
    fake.script(Outcome(exit_code=3, logs="boom\n", duration=0.1), image="algo:1")
    fake.script(Outcome(vanish_after=0), command="provision.py", times=1)   # lost once, then default
The newest matching script wins; one with `times` is used that many times, then skipped.
Unmatched containers get `default` (exit 0 at once, no logs).

Faults
    fake.fail("create", 2)              the next 2 create calls raise RuntimeUnavailable
    fake.fail("start", 1, step="algorithm")  only calls about that step's containers count
    fake.fail("create", 1, after=True)  the next create happens in Docker, but the call still fails
    fake.fail("*", 3)                   the next 3 calls of any method fail
    fake.go_down() / fake.up()          Docker unreachable: every call (and every wait or log
                                        follow in progress) raises RuntimeUnavailable until up()
    fake.vanish(cid)                    the container is deleted behind runnerd's back
    fake.finish(cid, exit_code)         a container scripted to run forever exits now
    gate = fake.gate("create", step="algorithm")
                                        the next such call waits: `await gate.reached.wait()`
                                        tells it is waiting, `gate.opened.set()` lets it go on

FakeClock: runnerd.clock.Clock whose time moves only when the test says so
    clock = FakeClock()
    engine = Engine(..., clock=clock)
    await clock.sleeping(5.0)           wait until some task sleeps 5 s on it (a positive event)
    await clock.advance(5.0)            the time moves on; each sleep that is due returns, in order
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import itertools
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from runnerd.containers.runtime import (
    LABEL_INSTANCE,
    LABEL_JOB,
    LABEL_STEP,
    ContainerSpec,
    ContainerState,
    ContainerUsage,
    ImageInfo,
    OwnedContainer,
)
from runnerd.domain import ExitResult
from runnerd.errors import ContainerGone, ImageMissing, RuntimeUnavailable

SIGTERM_EXIT, SIGKILL_EXIT = 143, 137


@dataclass(frozen=True)
class Outcome:
    """How a scripted container behaves once started."""

    exit_code: int = 0
    oom_killed: bool = False
    logs: str | bytes = ""  # what it prints (stdout and stderr together)
    duration: float | None = 0.0  # seconds until it exits by itself; None: runs until stopped
    error: str | None = None  # Docker's State.Error
    ignores_sigterm: bool = False  # stop() then ends it with SIGKILL (137) instead of 143
    vanish_after: float | None = None  # deleted behind runnerd's back this long after start
    outage_after: float | None = None  # Docker becomes unreachable this long after start…
    outage_for: float | None = None  # …for this long (None: until up() is called)
    on_start: Callable[["FakeRuntime", "FakeContainer"], None] | None = None


@dataclass
class _Script:
    outcome: Outcome
    image: str | None
    command: str | None
    step: str | None
    times: int | None

    def matches(self, spec: ContainerSpec) -> bool:
        if self.times == 0:
            return False
        if self.image is not None and spec.image != self.image:
            return False
        if self.command is not None and self.command not in " ".join([*(spec.entrypoint or []), *spec.command]):
            return False
        if self.step is not None and spec.labels.get(LABEL_STEP) != self.step:
            return False
        return True


@dataclass
class FakeContainer:
    id: str
    name: str
    spec: ContainerSpec
    outcome: Outcome
    created: float
    status: str = "created"  # created | running | exited
    exit: ExitResult | None = None
    started_at: float | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)  # set when it exits or is removed
    timers: list[asyncio.TimerHandle] = field(default_factory=list)

    @property
    def logs(self) -> bytes:
        raw = self.outcome.logs
        return raw.encode() if isinstance(raw, str) else raw

    def cancel_timers(self) -> None:
        for timer in self.timers:
            timer.cancel()
        self.timers.clear()


@dataclass
class Gate:
    """Holds the next matching call until the test opens it (to act at an exact moment)."""

    method: str
    step: str | None
    reached: asyncio.Event = field(default_factory=asyncio.Event)
    opened: asyncio.Event = field(default_factory=asyncio.Event)


class FakeRuntime:
    def __init__(self, images: set[str] | None = None, pullable: set[str] | None = None,
                 default: Outcome | None = None, instance: str = ""):
        self.instance = instance  # like DockerRuntime: labels every container, scopes list_owned
        self.images: set[str] = set(images or ())
        self.digests: dict[str, tuple[str, tuple[str, ...]]] = {}  # ref -> (id, repo digests)
        self.volumes: dict[str, list[str]] = {}  # image -> its VOLUME paths
        self.networks: set[str] = set()
        self.pullable: set[str] = set(pullable or ())
        self.default = default or Outcome()
        self.containers: dict[str, FakeContainer] = {}
        self.history: list[FakeContainer] = []  # every container ever created, in order
        self.removed: list[str] = []  # ids removed through the API
        self.vanished: list[str] = []  # ids deleted behind runnerd's back
        self.calls: Counter[str] = Counter()
        self.down = False
        self._scripts: list[_Script] = []
        self._failures: Counter[tuple[str, str | None]] = Counter()
        self._fail_after: Counter[tuple[str, str | None]] = Counter()
        self._outage = asyncio.Event()  # replaced each time Docker goes down
        self._gates: list[Gate] = []
        # #15: what `usage` answers for a running container (default: cpu grows with its run time),
        # image sizes and creation times for list_images, and the credentials each pull was given.
        self.usage_of: Callable[[FakeContainer], ContainerUsage] = _default_usage
        self.image_sizes: dict[str, int] = {}
        self.pull_auths: list[tuple[str, dict[str, str] | None]] = []

    # -- scripting and faults -------------------------------------------------------------------

    def script(self, outcome: Outcome, *, image: str | None = None, command: str | None = None,
               step: str | None = None, times: int | None = None) -> None:
        self._scripts.append(_Script(outcome, image, command, step, times))

    def fail(self, method: str, times: int = 1, after: bool = False, step: str | None = None) -> None:
        """Make the next `times` calls of `method` ("*": any) raise RuntimeUnavailable; with `after`,
        the call takes effect first (Docker did it, but the answer was lost); with `step`, only
        calls about containers of that step (runnerd.step label) count."""
        (self._fail_after if after else self._failures)[(method, step)] += times

    def sibling(self, instance: str) -> "FakeRuntime":
        """Another daemon's runtime on the same (fake) Docker: shared containers, own instance."""
        other = FakeRuntime(default=self.default, instance=instance)
        for name in ("images", "pullable", "containers", "history", "removed", "vanished", "_scripts"):
            setattr(other, name, getattr(self, name))
        return other

    def gate(self, method: str, step: str | None = None) -> Gate:
        gate = Gate(method, step)
        self._gates.append(gate)
        return gate

    async def _pass_gate(self, method: str, step: str | None) -> None:
        for gate in list(self._gates):
            if gate.method == method and gate.step in (None, step):
                self._gates.remove(gate)
                gate.reached.set()
                await gate.opened.wait()
                return

    def _step_of(self, container_id: str) -> str | None:
        c = self.containers.get(container_id)
        return c.spec.labels.get(LABEL_STEP) if c else None

    def go_down(self, seconds: float | None = None) -> None:
        self.down = True
        outage, self._outage = self._outage, asyncio.Event()
        outage.set()  # waits and log follows in progress lose their connection
        if seconds is not None:
            asyncio.get_running_loop().call_later(seconds, self.up)

    def up(self) -> None:
        self.down = False

    def vanish(self, container_id: str) -> None:
        """`docker rm -f` by someone else."""
        c = self.containers.pop(container_id, None)
        if c is None:
            return
        c.cancel_timers()
        self.vanished.append(container_id)
        c.done.set()

    def finish(self, container_id: str, exit_code: int = 0, oom_killed: bool = False) -> None:
        """End a running container now (a scripted `duration=None` container exits when told)."""
        self._finish(container_id, ExitResult(exit_code, oom_killed))

    def by_step(self, step: str) -> list[FakeContainer]:
        return [c for c in self.history if c.spec.labels.get(LABEL_STEP) == step]

    def of_job(self, job_id: str) -> list[FakeContainer]:
        return [c for c in self.history if c.spec.labels.get(LABEL_JOB) == job_id]

    # -- internals ----------------------------------------------------------------------------

    @staticmethod
    def _consume(failures: Counter, method: str, step: str | None) -> bool:
        for key in dict.fromkeys(((method, step), (method, None), ("*", step), ("*", None))):
            if failures[key] > 0:
                failures[key] -= 1
                return True
        return False

    def _enter(self, method: str, step: str | None = None) -> None:
        self.calls[method] += 1
        if self.down:
            raise RuntimeUnavailable(f"Docker is not reachable (fake outage during {method})")
        if self._consume(self._failures, method, step):
            raise RuntimeUnavailable(f"Docker error (fake failure of {method})")

    def _leave(self, method: str, step: str | None = None) -> None:
        if self._consume(self._fail_after, method, step):
            raise RuntimeUnavailable(f"Docker error after the fact (fake failure of {method})")

    def _pick(self, spec: ContainerSpec) -> Outcome:
        for s in reversed(self._scripts):
            if s.matches(spec):
                if s.times is not None:
                    s.times -= 1
                return s.outcome
        return self.default

    def _finish(self, container_id: str, result: ExitResult) -> None:
        c = self.containers.get(container_id)
        if c is None or c.status != "running":
            return
        c.cancel_timers()
        c.status, c.exit = "exited", result
        c.done.set()

    def _image_present(self, ref: str) -> bool:
        return ref in self.images

    # -- the ContainerRuntime protocol ----------------------------------------------------------

    async def ping(self) -> str:
        self._enter("ping")
        return "fake-1.0"

    async def has_image(self, ref: str) -> bool:
        self._enter("has_image")
        return self._image_present(ref)

    async def ensure_network(self, name: str) -> None:
        self._enter("ensure_network")
        self.networks.add(name)

    async def image_digests(self, ref: str) -> tuple[str, tuple[str, ...]]:
        self._enter("image_digests")
        if not self._image_present(ref):
            raise ImageMissing(f"image {ref} is not present")
        return self.digests.get(ref, ("sha256:" + "0" * 64, ()))

    async def image_volumes(self, ref: str) -> list[str]:
        self._enter("image_volumes")
        if not self._image_present(ref):
            raise ImageMissing(f"image {ref} is not present")
        return sorted(self.volumes.get(ref, ()))

    async def pull(self, ref: str, auth: dict[str, str] | None = None) -> None:
        self._enter("pull")
        self.pull_auths.append((ref, auth))
        if ref not in self.pullable:
            raise ImageMissing(f"cannot pull {ref}: not found in the fake registry")
        self.images.add(ref)

    async def create(self, spec: ContainerSpec) -> str:
        step = spec.labels.get(LABEL_STEP)
        await self._pass_gate("create", step)
        self._enter("create", step)
        if not self._image_present(spec.image):
            raise ImageMissing(f"image {spec.image} is not present")
        for old in [c for c in self.containers.values() if c.name == spec.name]:
            old.cancel_timers()
            del self.containers[old.id]
            old.done.set()
        if self.instance:
            spec = dataclasses.replace(spec, labels={**spec.labels, LABEL_INSTANCE: self.instance})
        cid = secrets.token_hex(32)
        c = FakeContainer(cid, spec.name, spec, self._pick(spec), created=time.time())
        self.containers[cid] = c
        self.history.append(c)
        self._leave("create", step)
        return cid

    async def start(self, container_id: str) -> None:
        step = self._step_of(container_id)
        await self._pass_gate("start", step)
        self._enter("start", step)
        c = self.containers.get(container_id)
        if c is None:
            raise ContainerGone(container_id)
        if c.status == "created":
            c.status, c.started_at = "running", time.time()
            loop = asyncio.get_running_loop()
            o = c.outcome
            if o.duration is not None:
                c.timers.append(loop.call_later(o.duration, self._finish, c.id,
                                                ExitResult(o.exit_code, o.oom_killed, o.error)))
            if o.vanish_after is not None:
                c.timers.append(loop.call_later(o.vanish_after, self.vanish, c.id))
            if o.outage_after is not None:
                loop.call_later(o.outage_after, self.go_down, o.outage_for)
            if o.on_start is not None:
                o.on_start(self, c)
        self._leave("start", step)

    async def wait(self, container_id: str, timeout: float | None = None) -> ExitResult | None:
        self._enter("wait", self._step_of(container_id))
        c = self.containers.get(container_id)
        if c is None:
            raise ContainerGone(container_id)
        if c.status != "exited":
            outage = asyncio.create_task(self._outage.wait())
            done = asyncio.create_task(c.done.wait())
            try:
                finished, _ = await asyncio.wait({outage, done}, timeout=timeout,
                                                 return_when=asyncio.FIRST_COMPLETED)
            finally:
                outage.cancel()
                done.cancel()
            if not finished:
                return None
            if outage in finished and done not in finished:
                raise RuntimeUnavailable("Docker is not reachable (the wait connection broke)")
        if container_id not in self.containers or c.exit is None:
            raise ContainerGone(container_id)
        return c.exit

    async def inspect(self, container_id: str) -> ContainerState | None:
        self._enter("inspect", self._step_of(container_id))
        c = self.containers.get(container_id)
        if c is None:
            return None
        return ContainerState(c.id, c.status, c.exit)

    async def stop(self, container_id: str, grace: float) -> None:
        step = self._step_of(container_id)
        await self._pass_gate("stop", step)
        self._enter("stop", step)
        c = self.containers.get(container_id)
        if c is None or c.status != "running":
            return
        if c.outcome.ignores_sigterm:
            await asyncio.sleep(min(grace, 0.05))
            self._finish(container_id, ExitResult(SIGKILL_EXIT))
        else:
            self._finish(container_id, ExitResult(SIGTERM_EXIT))

    async def remove(self, container_id: str) -> None:
        self._enter("remove", self._step_of(container_id))
        c = self.containers.pop(container_id, None)
        if c is None:
            return
        c.cancel_timers()
        self.removed.append(container_id)
        c.done.set()

    async def copy_logs(self, container_id: str, path: str, limit: int, follow: bool) -> int:
        self._enter("copy_logs", self._step_of(container_id))
        c = self.containers.get(container_id)
        if c is None:
            raise ContainerGone(container_id)
        data = c.logs
        with open(path, "ab") as out:
            if len(data) > limit:
                out.write(data[:limit])
                out.write(f"\n[runnerd: log cut at {limit} bytes]\n".encode())
                written = limit
            else:
                out.write(data)
                written = len(data)
        if follow and c.status != "exited" and written < limit:
            outage = asyncio.create_task(self._outage.wait())
            done = asyncio.create_task(c.done.wait())
            try:
                finished, _ = await asyncio.wait({outage, done}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                outage.cancel()
                done.cancel()
            if outage in finished and done not in finished:
                raise RuntimeUnavailable("Docker is not reachable (the log stream broke)")
        return written

    async def list_owned(self) -> list[OwnedContainer]:
        self._enter("list_owned")
        return [
            OwnedContainer(c.id, c.name, c.spec.labels[LABEL_JOB], c.spec.labels.get(LABEL_STEP, ""), c.status,
                           c.created)
            for c in self.containers.values()
            if LABEL_JOB in c.spec.labels and (not self.instance or c.spec.labels.get(LABEL_INSTANCE) == self.instance)
        ]

    async def close(self) -> None:
        for c in self.containers.values():
            c.cancel_timers()

    # -- #15: usage, the image a container runs, image garbage collection -------------------------

    async def usage(self, container_ids: list[str]) -> dict[str, ContainerUsage]:
        self._enter("usage")
        return {cid: self.usage_of(self.containers[cid]) for cid in container_ids
                if cid in self.containers and self.containers[cid].status == "running"}

    async def container_image(self, container_id: str) -> str | None:
        self._enter("container_image")
        c = self.containers.get(container_id)
        if c is None:
            return None
        return self.digests.get(c.spec.image, ("sha256:" + "0" * 64, ()))[0]

    async def list_images(self) -> list[ImageInfo]:
        self._enter("list_images")
        by_id: dict[str, list[str]] = {}  # like Docker: one image, every tag naming it
        for ref in sorted(self.images):
            by_id.setdefault(self.digests.get(ref, ("sha256:" + ref.encode().hex()[:64].ljust(64, "0"), ()))[0],
                             []).append(ref)
        return [ImageInfo(image_id, tuple(refs), max(self.image_sizes.get(r, 0) for r in refs), 0.0)
                for image_id, refs in by_id.items()]

    async def remove_image(self, ref: str) -> bool:
        self._enter("remove_image")
        if ref not in self.images or any(c.spec.image == ref for c in self.containers.values()):
            return False  # Docker refuses to remove an image a container (even a stopped one) uses
        self.images.discard(ref)
        return True


def _default_usage(c: FakeContainer) -> ContainerUsage:
    ran = time.time() - (c.started_at or time.time())
    return ContainerUsage(cpu_seconds=ran, memory_bytes=64 * 1024 * 1024, memory_peak_bytes=64 * 1024 * 1024, pids=1)


class FakeClock:
    """A runnerd.clock.Clock for tests: `sleep` waits until `advance` moves the time past its end.
    `now()` starts at the real time (stored timestamps stay plausible) and moves with `advance`."""

    def __init__(self) -> None:
        self.elapsed = 0.0
        self._epoch = time.time()
        self._seq = itertools.count()
        self._sleepers: list[tuple[float, int, float, asyncio.Future]] = []  # (due, order, asked, waiter)
        self._changed = asyncio.Condition()
        self.asked: list[float] = []  # every sleep asked for, in order

    def now(self) -> float:
        return self._epoch + self.elapsed

    def monotonic(self) -> float:
        return 1000.0 + self.elapsed

    async def sleep(self, seconds: float) -> None:
        self.asked.append(seconds)
        waiter = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.elapsed + max(0.0, seconds), next(self._seq), seconds, waiter))
        async with self._changed:
            self._changed.notify_all()
        try:
            await waiter
        finally:
            if not waiter.done():  # cancelled: it no longer sleeps
                waiter.cancel()
            self._sleepers = [s for s in self._sleepers if s[3] is not waiter]
            heapq.heapify(self._sleepers)

    def pending(self) -> list[float]:
        """The durations asked by the sleeps still waiting, soonest due first."""
        return [asked for _, _, asked, w in sorted(self._sleepers) if not w.done()]

    async def sleeping(self, seconds: float | None = None, timeout: float = 30) -> None:
        """Wait until a task sleeps on this clock (for `seconds`, give or take a rounding, if given).
        `timeout` is a safety net against a hang (real seconds), not a timing assertion."""
        def found() -> bool:
            return any(seconds is None or abs(asked - seconds) < 1e-6 for asked in self.pending())

        async def wait() -> None:
            async with self._changed:
                await self._changed.wait_for(found)

        await asyncio.wait_for(wait(), timeout)

    async def advance(self, seconds: float) -> None:
        """Move the time on by `seconds`: each sleep due meanwhile returns, in the order due, and
        runs until it next waits on something (each gets a few turns of the event loop)."""
        target = self.elapsed + seconds
        # within a microsecond counts as due: a wait computed from wall-clock times (a deadline
        # minus now(), both near 1.8e9) carries a rounding of a few 1e-7 s
        while self._sleepers and self._sleepers[0][0] <= target + 1e-6:
            due, _, _, waiter = heapq.heappop(self._sleepers)
            self.elapsed = max(self.elapsed, min(due, target))
            if not waiter.done():
                waiter.set_result(None)
                for _ in range(5):
                    await asyncio.sleep(0)
        self.elapsed = target
