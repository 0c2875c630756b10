"""Per-job registry credentials for a private algorithm image (#15): held in memory only, from
the start request until the job's image is on the host, then dropped.

They are never written to the job's row, its request copy, a log or a step's plan: a stored
credential would outlive its job in the database file and its backups. The price: a job whose
image still had to be pulled when the daemon restarted has lost them, and its pull goes without
(a private image then fails at 32 with the registry's refusal, as without credentials).
"""

from __future__ import annotations

from dataclasses import dataclass

_FIELDS = ("username", "password", "identitytoken", "serveraddress")


@dataclass(frozen=True)
class RegistryAuth:
    username: str = ""
    password: str = ""
    identitytoken: str = ""
    serveraddress: str = ""

    def __repr__(self) -> str:  # a log line that prints one must never show the secret
        return f"RegistryAuth(username={self.username!r}, serveraddress={self.serveraddress!r}, secret=…)"

    def header(self) -> dict[str, str]:
        """What Docker's X-Registry-Auth carries (empty fields left out)."""
        return {k: getattr(self, k) for k in _FIELDS if getattr(self, k)}


def parse(value: object) -> RegistryAuth | None:
    """A request's `dockerRegistryAuth` ({username, password} or {identitytoken}, optionally
    serveraddress); ValueError with the field when malformed. None when absent."""
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) - set(_FIELDS):
        raise ValueError(f"dockerRegistryAuth must be an object of {', '.join(_FIELDS)}")
    if not all(isinstance(value.get(k, ""), str) and len(value.get(k, "")) <= 4096 for k in _FIELDS):
        raise ValueError("dockerRegistryAuth fields must be strings")
    auth = RegistryAuth(**{k: value.get(k, "") for k in _FIELDS})
    if not ((auth.username and auth.password) or auth.identitytoken):
        raise ValueError("dockerRegistryAuth needs username and password, or identitytoken")
    return auth


class Credentials:
    """job id -> its registry credentials, until its image is pulled or the job ends."""

    def __init__(self) -> None:
        self._held: dict[str, RegistryAuth] = {}

    def put(self, job_id: str, auth: RegistryAuth | None) -> None:
        if auth is not None:
            self._held[job_id] = auth

    def get(self, job_id: str) -> RegistryAuth | None:
        return self._held.get(job_id)

    def forget(self, job_id: str) -> None:
        self._held.pop(job_id, None)

    def __len__(self) -> int:
        return len(self._held)
