"""A scalar field a client sent, read the one way: the API's parameters and the start request's
nested fields (intake) both come through `text`, so both refuse the same values with the same
words and codes."""

from __future__ import annotations

from typing import Any

from runnerd.errors import BadRequest

MAX_TEXT = 256  # longest accepted scalar field unless the caller says otherwise (a signature is 132)


def text(obj: dict[str, Any], key: str, required: bool = False, limit: int = MAX_TEXT, path: str = "") -> str:
    """`obj[key]` as the exact text the client sent ("" when absent or empty). A number is taken as
    its decimal text (ocean.py sends some ids as integers); anything else is refused. `path` names
    the field in the error (`dataset.transferTxId`); it defaults to `key`."""
    path = path or key
    value = obj.get(key)
    if value is None or value == "":
        if required:
            raise BadRequest(f"{path} is required", "missing", path)
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise BadRequest(f"{path} must be a string", "invalid", path)
    value = str(value)
    if len(value) > limit:
        raise BadRequest(f"{path} is longer than {limit} characters", "invalid", path)
    return value
