"""The one base model every custom-resource model derives from.

camelCase on the wire, snake_case in Python, unknown fields refused (a typo in a policy must be
an error, not a silently ignored setting), and field docstrings used as descriptions so the CRD
documents itself (``kubectl explain``).

Cross-field rules are declared once as :class:`Rule` objects: the CRD generator emits them as CEL
(``x-kubernetes-validations``) so the apiserver refuses bad input with the rule's message, and the
model checks the same rule in Python with the same message, so unit tests and the operator agree
with the apiserver.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic.alias_generators import to_camel


@dataclass(frozen=True)
class Rule:
    """A cross-field rule: CEL for the apiserver, a Python predicate for the model."""

    cel: str
    message: str
    check: Callable[[Any], bool]


def _add_rules(schema: dict[str, Any], cls: type[Any]) -> None:
    rules: tuple[Rule, ...] = getattr(cls, "__rules__", ())
    if rules:
        schema["x-kubernetes-validations"] = [{"rule": r.cel, "message": r.message} for r in rules]
    schema.update(getattr(cls, "__schema_extra__", {}))


class CRModel(BaseModel):
    """Base for spec models of the backup.lamassu.io resources."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_attribute_docstrings=True,
        validate_default=True,
        json_schema_extra=_add_rules,
    )

    __rules__: ClassVar[tuple[Rule, ...]] = ()
    __schema_extra__: ClassVar[dict[str, Any]] = {}

    @model_validator(mode="after")
    def _check_rules(self) -> Self:
        for rule in type(self).__rules__:
            if not rule.check(self):
                raise ValueError(rule.message)
        return self

    def to_api(self) -> dict[str, Any]:
        """The object as the Kubernetes API wants it: camelCase, no unset optional fields."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class StatusModel(CRModel):
    """Base for status models: tolerant of fields written by a newer operator version."""

    model_config = ConfigDict(extra="ignore")


class RunnerModel(BaseModel):
    """Base of the operator-runner contract models (camelCase JSON, unknown fields refused)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")
