"""AWS KMS metadata: keys, aliases, key policies, tags. Key material cannot be exported; what can
be lost (an alias, a policy, a key scheduled for deletion) is recorded so it can be recreated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from ..errors import ConfigurationError, StorageError


@dataclass(frozen=True)
class KmsConnection:
    """Region, endpoint and credentials (values, read from Secret files by the caller)."""

    region: str
    endpoint: str | None = None
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)


def _fail(what: str, exc: Exception) -> StorageError:
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        return StorageError(f"AWS KMS {what} failed: {err.get('Code')}: {err.get('Message', '')}")
    return StorageError(f"AWS KMS {what} failed: {type(exc).__name__}: {exc}")


def export_metadata(conn: KmsConnection, key_ids: list[str]) -> tuple[dict[str, Any], list[str]]:
    """Describe every key (or the listed ones); returns the document and warnings.

    A key in PendingDeletion is a loud warning: once deleted, every CA it holds is unusable.
    """
    session = boto3.session.Session(
        aws_access_key_id=conn.access_key_id,
        aws_secret_access_key=conn.secret_access_key,
        aws_session_token=conn.session_token,
        region_name=conn.region,
    )
    kms = session.client("kms", endpoint_url=conn.endpoint or None)
    try:
        ids = list(key_ids)
        if not ids:
            for key_page in kms.get_paginator("list_keys").paginate():
                ids.extend(k["KeyId"] for k in key_page.get("Keys", []))
        aliases: list[dict[str, Any]] = []
        for alias_page in kms.get_paginator("list_aliases").paginate():
            aliases.extend(dict(a) for a in alias_page.get("Aliases", []))
    except (ClientError, BotoCoreError) as exc:
        raise _fail("listing keys", exc) from None
    keys: dict[str, Any] = {}
    warnings: list[str] = []
    for key_id in ids:
        try:
            meta = kms.describe_key(KeyId=key_id)["KeyMetadata"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "NotFoundException":
                raise ConfigurationError(
                    f"AWS KMS key {key_id} does not exist (spec.components.awsKms.keyIds)"
                ) from None
            raise _fail(f"DescribeKey {key_id}", exc) from None
        except BotoCoreError as exc:
            raise _fail(f"DescribeKey {key_id}", exc) from None
        entry: dict[str, Any] = {"metadata": meta}
        try:
            entry["policy"] = kms.get_key_policy(KeyId=meta["KeyId"], PolicyName="default").get(
                "Policy"
            )
        except (ClientError, BotoCoreError) as exc:
            entry["policyError"] = str(_fail("GetKeyPolicy", exc))
        try:
            entry["tags"] = kms.list_resource_tags(KeyId=meta["KeyId"]).get("Tags", [])
        except (ClientError, BotoCoreError):
            entry["tags"] = []
        entry["aliases"] = [
            a["AliasName"] for a in aliases if a.get("TargetKeyId") == meta["KeyId"]
        ]
        state = meta.get("KeyState")
        if state == "PendingDeletion":
            when = meta.get("DeletionDate")
            warnings.append(
                f"AWS KMS key {meta['KeyId']} ({', '.join(entry['aliases']) or 'no alias'}) "
                "is scheduled "
                f"for deletion on {when}: cancel it (aws kms cancel-key-deletion) if a CA uses it"
            )
        elif state not in ("Enabled", None):
            warnings.append(f"AWS KMS key {meta['KeyId']} is {state}")
        keys[meta["KeyId"]] = entry
    return {"region": conn.region, "keys": keys, "aliases": aliases}, warnings
