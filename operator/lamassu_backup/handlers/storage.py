"""kopf's own marks on our objects, read so that junk in them never stops an object's handling.

kopf keeps handler progress and the last handled spec in annotations under our API group. A
hand-edited or copied manifest can carry junk there; kopf's own storages then raise on every
event and the object is never processed, with no word. These read such junk as "no record",
say so once per event in the log, and kopf overwrites it with a good value after handling.
"""

from __future__ import annotations

import logging
from typing import Any, cast

import kopf

log = logging.getLogger("lamassu_backup")


def _is_mapping(value: object) -> bool:
    """JSON that parses is not always an object ("5" parses too)."""
    return isinstance(value, dict)


def _name(body: kopf.Body) -> str:
    meta = body.get("metadata") or {}
    return f"{body.get('kind', 'object')} {meta.get('namespace', '')}/{meta.get('name', '')}"


class TolerantProgressStorage(kopf.AnnotationsProgressStorage):
    """Handler progress; an unreadable record means the handler has not run yet."""

    def fetch(self, *, key: Any, body: kopf.Body) -> Any:
        record: object
        try:
            record = super().fetch(key=key, body=body)
        except (ValueError, TypeError):
            record = None
            log.warning(
                "%s: the annotation %s/%s holds no valid handler record (hand-edited or copied?); "
                "treating the handler as not run yet",
                _name(body),
                self.prefix,
                key,
            )
        if record is not None and not _is_mapping(record):
            log.warning("%s: ignoring a malformed handler record for %s", _name(body), key)
            return None
        return record


class TolerantDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """The last handled configuration; an unreadable one means the object is seen anew."""

    def fetch(self, *, body: kopf.Body) -> Any:
        essence: object
        try:
            essence = super().fetch(body=body)
        except (ValueError, TypeError):
            log.warning(
                "%s: the annotation %s/%s is not valid JSON (hand-edited or copied?); "
                "handling the object as new",
                _name(body),
                self.prefix,
                self.key,
            )
            return None
        if essence is not None and not _is_mapping(essence):
            log.warning("%s: ignoring a malformed last-handled configuration", _name(body))
            return None
        return cast(Any, essence)
