"""doctor's `swarm` check (#17): the configured manager answers and is a manager, and every
environment fits at least one usable node (Ready, active, labelled runnerd.swap=off, after its
reserve). Pure of Docker: it is handed the runtime (doctor.py builds the real one)."""

from __future__ import annotations

from typing import Any, Protocol

from runnerd.config import Settings
from runnerd.containers.swarm_spec import SWAP_LABEL
from runnerd.engine.node_placer import unplaceable
from runnerd.errors import RuntimeUnavailable

FIX_MANAGER = ("set swarmManager (or DOCKER_HOST, with DOCKER_TLS_VERIFY and DOCKER_CERT_PATH for a TLS port) to "
               "a swarm manager's Docker API; `docker node ls` there must answer")


class Manager(Protocol):
    async def ping(self) -> str: ...

    async def nodes(self) -> list[dict[str, Any]]: ...

    async def close(self) -> None: ...


async def swarm_findings(settings: Settings, manager: Manager, where: str) -> list[tuple[str, str, str]]:
    """(OK|FAIL, detail, fix) of a swarm backend; nothing for a local one. Closes the manager."""
    if settings.backend != "swarm":
        return []
    try:
        version = await manager.ping()
        nodes = await manager.nodes()
    except RuntimeUnavailable as exc:
        return [("FAIL", f"cannot use the swarm manager at {where}: {exc}", FIX_MANAGER)]
    finally:
        await manager.close()
    problems = unplaceable(settings, nodes)
    if problems:
        return [("FAIL", text, "see the text: label, resize or add nodes, or lower the environment") for text in
                problems]
    usable = sum(1 for n in nodes if (n.get("labels") or {}).get(SWAP_LABEL) == "off")
    return [("OK", f"swarm manager at {where} (Docker {version}): {usable} of {len(nodes)} Ready, active node(s) "
             f"labelled {SWAP_LABEL}=off; every environment fits one of them", "")]
