"""Building blocks shared by the three resources: Secret references, selectors, conditions."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints

from .base import CRModel, StatusModel

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
OBJECT_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
"""A Kubernetes object name (DNS-1123 subdomain). Checked in the schema: a reference such as
'../etc' or '.' would otherwise reach the API as a path and come back as a confusing 403."""

ObjectName = Annotated[str, StringConstraints(min_length=1, max_length=253, pattern=OBJECT_NAME)]
"""The name of a ConfigMap, Secret or other object in the resource's namespace."""
ENGINE_ID_MAX = 63
"""Longest kms crypto engine id accepted (Lamassu's are short: filesystem-1, vault-1)."""
SECRET_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"  # noqa: S105 - a key-name pattern, not a secret


class ComponentName(StrEnum):
    """The parts of a Lamassu deployment a backup set can hold."""

    POSTGRES = "postgres"
    VAULT = "vault"
    CONFIG = "config"
    VOLUMES = "volumes"
    AWS_KMS = "awsKms"


class SecretKeyRef(CRModel):
    """One key of a Secret in the resource's namespace."""

    name: str = Field(min_length=1, max_length=253, pattern=OBJECT_NAME)
    """Name of the Secret."""

    key: str = Field(min_length=1, max_length=253, pattern=SECRET_KEY_PATTERN)
    """Key inside the Secret's data."""


class BasicAuthSecretRef(CRModel):
    """A Secret holding a username and a password (for PostgreSQL)."""

    name: str = Field(min_length=1, max_length=253, pattern=OBJECT_NAME)
    """Name of the Secret."""

    username_key: str = Field(default="username", pattern=SECRET_KEY_PATTERN)
    """Key holding the username."""

    password_key: str = Field(default="password", pattern=SECRET_KEY_PATTERN)
    """Key holding the password."""


class AwsCredentialsSecretRef(CRModel):
    """A Secret holding an AWS access key pair."""

    name: str = Field(min_length=1, max_length=253, pattern=OBJECT_NAME)
    """Name of the Secret."""

    access_key_id_key: str = Field(default="accessKeyId", pattern=SECRET_KEY_PATTERN)
    """Key holding the access key id."""

    secret_access_key_key: str = Field(default="secretAccessKey", pattern=SECRET_KEY_PATTERN)
    """Key holding the secret access key."""

    session_token_key: str | None = Field(default=None, pattern=SECRET_KEY_PATTERN)
    """Key holding a session token, for temporary credentials."""


class LocalObjectRef(CRModel):
    """A reference to an object in the same namespace."""

    name: str = Field(min_length=1, max_length=253, pattern=OBJECT_NAME)
    """Name of the referenced object."""


class LabelSelectorRequirement(CRModel):
    """A set-based label requirement, as in Kubernetes label selectors."""

    key: str = Field(min_length=1)
    """The label key the requirement applies to."""

    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    """How the key relates to the values."""

    values: list[str] = Field(default_factory=list)
    """Values for In and NotIn; empty for Exists and DoesNotExist."""


class LabelSelector(CRModel):
    """A Kubernetes label selector; an empty selector matches nothing here, never everything."""

    match_labels: dict[str, str] = Field(default_factory=dict)
    """Labels an object must carry, all of them."""

    match_expressions: list[LabelSelectorRequirement] = Field(default_factory=list)
    """Set-based requirements, all of which must hold."""

    def to_query(self) -> str:
        """The selector in the string form the list APIs take (``a=b,c in (d,e)``)."""
        parts = [f"{k}={v}" for k, v in sorted(self.match_labels.items())]
        for expr in self.match_expressions:
            if expr.operator == "Exists":
                parts.append(expr.key)
            elif expr.operator == "DoesNotExist":
                parts.append(f"!{expr.key}")
            else:
                op = "in" if expr.operator == "In" else "notin"
                parts.append(f"{expr.key} {op} ({','.join(expr.values)})")
        return ",".join(parts)

    def matches(self, labels: dict[str, str]) -> bool:
        """True when ``labels`` satisfy every requirement (an empty selector matches nothing)."""
        if self.is_empty():
            return False
        if any(labels.get(k) != v for k, v in self.match_labels.items()):
            return False
        for expr in self.match_expressions:
            present = expr.key in labels
            ok = {
                "In": present and labels.get(expr.key) in expr.values,
                "NotIn": not present or labels.get(expr.key) not in expr.values,
                "Exists": present,
                "DoesNotExist": not present,
            }[expr.operator]
            if not ok:
                return False
        return True

    def is_empty(self) -> bool:
        """True when the selector names no requirement at all."""
        return not self.match_labels and not self.match_expressions


class ConditionStatus(StrEnum):
    """Kubernetes condition status values."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(StatusModel):
    """A standard Kubernetes condition (metav1.Condition)."""

    type: str
    """Condition type, e.g. Ready, Stale, LastRunSucceeded, Verified."""

    status: ConditionStatus
    """True, False or Unknown."""

    reason: str
    """A CamelCase reason a program can match on."""

    message: str = ""
    """What happened and, when something is wrong, what to do about it."""

    last_transition_time: datetime | None = None
    """When the status last changed."""

    observed_generation: int | None = None
    """The spec generation this condition was computed from."""


FreeForm = dict[str, Any]
"""An object whose keys are not fixed by the schema (evidence, details)."""
