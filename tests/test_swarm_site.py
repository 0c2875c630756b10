"""The JobSite seam (#17): today's Workspace is its local implementation, verb for verb (same names,
parameters and async-ness), so a cluster site can replace it without the engine changing."""

from __future__ import annotations

import inspect

from runnerd.containers.site import JobSite
from runnerd.engine.workspace import Workspace


def _verbs(cls: type) -> dict[str, object]:
    return {name: fn for name, fn in vars(cls).items() if callable(fn) and not name.startswith("_")}


def test_workspace_implements_every_verb_of_the_job_site():
    wanted = _verbs(JobSite)
    assert {"paths", "prepare", "release_fs", "remove", "disk_full"} <= set(wanted)
    for name, proto in wanted.items():
        local = getattr(Workspace, name, None)
        assert local is not None, f"Workspace lacks {name}"
        assert inspect.iscoroutinefunction(local) == inspect.iscoroutinefunction(proto), name
        assert list(inspect.signature(local).parameters) == list(inspect.signature(proto).parameters), name
