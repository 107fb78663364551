"""The runner's answer to the operator: a compact JSON result in the termination message.

Kubernetes keeps at most 4096 bytes of it, so the result shrinks (artifact lists first) until it
fits, rather than being cut mid-JSON. Everything passes the redactor on the way out.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from ..errors import Redactor
from ..models.runner import RunnerResult

LIMIT = 4096
DEFAULT_PATH = "/dev/termination-log"


def encode(result: RunnerResult, redactor: Redactor, limit: int = LIMIT) -> str:
    """The result as JSON of at most ``limit`` bytes, dropping detail before meaning."""
    data = result.model_dump(mode="json", by_alias=True, exclude_none=True)
    text = redactor.redact(json.dumps(data, separators=(",", ":")))
    if len(text.encode()) <= limit:
        return text
    for key in ("evidence", "artifacts", "warnings"):
        if data.get(key):
            data[key] = (
                {"truncated": True} if key == "evidence" else [{"truncated": len(data[key])}]
            )
            text = redactor.redact(json.dumps(data, separators=(",", ":")))
            if len(text.encode()) <= limit:
                return text
    if "error" in data:
        data["error"] = str(data["error"])[:1000]
    return redactor.redact(json.dumps(data, separators=(",", ":")))[:limit]


def write(result: RunnerResult, redactor: Redactor) -> None:
    """Write the termination message (when the file is writable) and a line to stdout."""
    text = encode(result, redactor)
    explicit = os.environ.get("LAMASSU_TERMINATION_LOG")
    path = Path(explicit or DEFAULT_PATH)
    try:
        if explicit or path.exists():
            path.write_text(text)
    except OSError:
        pass  # not in a Pod (a person running the runner by hand): stdout still has it
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
