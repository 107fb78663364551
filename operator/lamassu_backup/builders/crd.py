"""Generate CustomResourceDefinitions from the pydantic models.

pydantic's JSON schema is close to, but not, what the apiserver accepts: it uses ``$ref``, encodes
optional fields as ``anyOf [X, null]``, sets ``additionalProperties: false`` beside ``properties``
and writes defaults in its own formats. This module rewrites it into a structural schema, puts the
models' defaults and CEL rules in, and wraps it in a CRD per kind. The models stay the single
source; CI regenerates and fails on drift.
"""

from __future__ import annotations

import copy
import re
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, TypeAdapter

from ..models.resources import CATEGORY, GROUP, KINDS, VERSION, ResourceKind

_DROP_KEYS = {"title", "examples", "$defs"}
_PARAGRAPH_NEWLINE = re.compile(r"(?<!\n)\n(?!\n)")


def _models_in(model: type[BaseModel], seen: dict[str, type[BaseModel]]) -> None:
    """Collect every model class reachable from ``model``, by the name pydantic gives its $def."""
    if model.__name__ in seen:
        return
    seen[model.__name__] = model
    for field in model.model_fields.values():
        for arg in _type_args(field.annotation):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                _models_in(arg, seen)


def _type_args(tp: Any) -> list[Any]:
    args = list(getattr(tp, "__args__", ()) or ())
    out = [tp]
    for arg in args:
        out.extend(_type_args(arg))
    return out


def _field_default(model: type[BaseModel], name: str) -> tuple[bool, Any]:
    """The default of a field as the API would store it, or (False, None) when it has none."""
    field = model.model_fields[name]
    if field.is_required():
        return False, None
    value = field.get_default(call_default_factory=True, validated_data={})
    if value is None:
        return False, None
    if isinstance(value, BaseModel):
        # An empty object lets the apiserver apply the nested properties' own defaults.
        return True, {}
    annotation: Any = field.annotation
    if field.metadata:
        annotation = Annotated[(annotation, *field.metadata)]
    adapter: TypeAdapter[Any] = TypeAdapter(annotation)
    return True, adapter.dump_python(value, mode="json", by_alias=True)


def _apply_defaults(defs: dict[str, Any], models: dict[str, type[BaseModel]]) -> None:
    for def_name, schema in defs.items():
        model = models.get(def_name)
        if model is None:
            continue
        props = schema.get("properties", {})
        for name, field in model.model_fields.items():
            alias = field.alias or name
            if alias not in props:
                continue
            has_default, value = _field_default(model, name)
            props[alias].pop("default", None)
            if has_default:
                props[alias]["default"] = value


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Replace a $ref by its target and an optional ``anyOf [X, null]`` by X.

    The field's own keys (description, default) win over the referenced model's.
    """
    if "$ref" in node:
        target = copy.deepcopy(defs[node["$ref"].split("/")[-1]])
        target.update({k: v for k, v in node.items() if k != "$ref"})
        return _resolve(target, defs)
    if "anyOf" in node and not node.get("x-kubernetes-int-or-string"):
        variants = [v for v in node["anyOf"] if v != {"type": "null"}]
        if len(variants) != 1:
            raise ValueError(f"cannot express a union in a structural schema: {variants}")
        merged = dict(variants[0])
        merged.update({k: v for k, v in node.items() if k != "anyOf"})
        return _resolve(merged, defs)
    return node


def _tidy(node: dict[str, Any]) -> dict[str, Any]:
    """Drop or rewrite keys the apiserver refuses in a structural schema."""
    node = {k: v for k, v in node.items() if k not in _DROP_KEYS}
    if "const" in node:
        node["enum"] = [node.pop("const")]
    if "default" in node and node["default"] is None:
        del node["default"]
    if "description" in node:
        # Docstrings wrap lines; kubectl explain wraps again, so keep paragraphs only.
        node["description"] = _PARAGRAPH_NEWLINE.sub(" ", node["description"]).strip()
    if node.get("additionalProperties") is True or node.get("x-kubernetes-preserve-unknown-fields"):
        node.pop("additionalProperties", None)
        node["x-kubernetes-preserve-unknown-fields"] = True
        node["type"] = "object"
    elif "properties" in node:
        node.pop("additionalProperties", None)  # pruning already drops unknown fields
    return node


def _structural(node: Any, defs: dict[str, Any]) -> Any:
    """Rewrite pydantic's schema into a structural one, recursively."""
    if isinstance(node, list):
        return [_structural(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    node = _tidy(_resolve(node, defs))
    for key in ("items", "additionalProperties", "anyOf"):
        if key in node:
            node[key] = _structural(node[key], defs)
    if "properties" in node:
        node["properties"] = {k: _structural(v, defs) for k, v in node["properties"].items()}
    return node


def openapi_schema(kind: ResourceKind) -> dict[str, Any]:
    """The structural openAPIV3Schema for one kind."""
    raw = kind.model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.get("$defs", {})
    models: dict[str, type[BaseModel]] = {}
    _models_in(kind.model, models)
    _apply_defaults(defs, models)
    root: dict[str, Any] = _structural({k: v for k, v in raw.items() if k != "$defs"}, defs)
    props = root["properties"]
    props["apiVersion"] = {"type": "string", "description": "API version of the object."}
    props["kind"] = {"type": "string", "description": "Kind of the object."}
    props["metadata"] = {"type": "object"}
    props["spec"].pop("default", None)
    if "status" in props:
        props["status"].pop("default", None)
    root["required"] = ["spec"]
    return root


def build_crd(kind: ResourceKind) -> dict[str, Any]:
    """The CustomResourceDefinition of one kind."""
    columns = [
        {
            "name": c.name,
            "type": c.type,
            "jsonPath": c.json_path,
            **({"description": c.description} if c.description else {}),
            **({"priority": c.priority} if c.priority else {}),
        }
        for c in kind.columns
    ]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": kind.crd_name,
            "labels": {"app.kubernetes.io/part-of": "lamassu-backup-operator"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.singular,
                "shortNames": list(kind.short_names),
                "categories": [CATEGORY],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": openapi_schema(kind)},
                }
            ],
        },
    }


def all_crds() -> list[dict[str, Any]]:
    """Every CRD, in a fixed order."""
    return [build_crd(kind) for kind in KINDS]


def crd_filename(kind: ResourceKind) -> str:
    """File name of a kind's CRD in crds/ and in the chart."""
    return f"{GROUP}_{kind.plural}.yaml"


def render_yaml(crd: dict[str, Any]) -> str:
    """Stable YAML: the generated files are committed and diffed in CI."""
    header = "# Generated by `make crds` from operator/lamassu_backup/models. Do not edit.\n"
    return header + yaml.safe_dump(crd, sort_keys=False, width=100, allow_unicode=True)


def render_all() -> dict[str, str]:
    """File name -> content for every CRD."""
    return {crd_filename(kind): render_yaml(build_crd(kind)) for kind in KINDS}
