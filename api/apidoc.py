"""docs/api.md, written from the OpenAPI document so the reference never drifts from the code.

    python -m api.apidoc            # rewrite docs/api.md
    python -m api.apidoc --check    # exit 1 when docs/api.md is stale

Only the router is read (the same ``build_document`` that serves ``GET /openapi.json``): no
database, no network. ``tests/test_docs.py`` fails when the file is stale, so whoever adds or
changes a route runs the first command.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, cast

from api.app import create_app
from api.openapi import build_document
from dispatcher.settings import Settings

REGENERATE = "python -m api.apidoc"
DEFAULT_PATH = Path(__file__).resolve().parents[1] / "docs" / "api.md"
_AUTH = {
    "tenantKey": "tenant API key",
    "platformToken": "platform token",
}
_TAG_TITLES = {
    "webhooks": "Webhook endpoints (tenant API)",
    "deliveries": "Deliveries (tenant API)",
    "events": "Events (tenant API)",
    "platform": "Platform API",
    "operations": "Operations",
}


def current_document() -> dict[str, Any]:
    """The document ``GET /openapi.json`` answers, built without a database."""
    # The router is all build_document reads; the pool is never touched. Default settings,
    # never the environment's, so the page is the same on every machine.
    app = create_app(Settings.model_construct(), cast(Any, None))
    return build_document(app)


def _cell(text: Any) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _resolve(doc: Mapping[str, Any], node: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = node.get("$ref")
    if isinstance(ref, str):
        target: Any = doc
        for part in ref.removeprefix("#/").split("/"):
            target = target[part]
        return cast(Mapping[str, Any], target)
    return node


def _type(doc: Mapping[str, Any], schema: Mapping[str, Any]) -> str:
    """A short human type: ``string``, ``integer or null``, ``list of string``, a model name."""
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return ref.rsplit("/", 1)[-1]
    if "anyOf" in schema or "oneOf" in schema:
        options = schema.get("anyOf") or schema.get("oneOf") or []
        return " or ".join(dict.fromkeys(_type(doc, o) for o in options))
    if "enum" in schema:
        return "one of " + ", ".join(f"`{v}`" for v in schema["enum"])
    if "const" in schema:
        return f"`{schema['const']}`"
    kind = schema.get("type", "any")
    if kind == "array":
        return "list of " + _type(doc, schema.get("items", {}))
    if isinstance(kind, list):
        return " or ".join(str(k) for k in kind)
    return str(kind)


def _description(schema: Mapping[str, Any]) -> str:
    text = str(schema.get("description", ""))
    for option in schema.get("anyOf", []):
        if not text and "description" in option:
            text = str(option["description"])
    if "default" in schema and schema["default"] is not None:
        text = (text + f" Default: `{schema['default']}`.").strip()
    return text


def _fields(doc: Mapping[str, Any], model: Mapping[str, Any]) -> Iterator[str]:
    required = set(model.get("required", []))
    yield "| field | type | required | description |"
    yield "|---|---|---|---|"
    for name, prop in model.get("properties", {}).items():
        yield (
            f"| `{name}` | {_cell(_type(doc, prop))} | {'yes' if name in required else ''} "
            f"| {_cell(_description(prop))} |"
        )


def _model_link(doc: Mapping[str, Any], schema: Mapping[str, Any]) -> str:
    """A model name links to its section below; anything else is shown as its type."""
    name = _type(doc, schema)
    if name in doc.get("components", {}).get("schemas", {}):
        return f"[`{name}`](#{name.lower()})"
    return f"`{name}`"


def _json_schema(doc: Mapping[str, Any], holder: Mapping[str, Any]) -> Mapping[str, Any] | None:
    content = _resolve(doc, holder).get("content", {})
    media = content.get("application/json")
    return cast(Mapping[str, Any], media["schema"]) if media and "schema" in media else None


def _operation(doc: Mapping[str, Any], method: str, path: str, op: Mapping[str, Any]) -> list[str]:
    lines = [f"### `{method.upper()} {path}`", "", _cell(op.get("summary", ""))]
    if op.get("description"):
        lines += ["", str(op["description"]).strip()]
    schemes = [name for requirement in op.get("security", []) for name in requirement]
    auth = ", ".join(_AUTH.get(s, s) for s in schemes) or "none (public)"
    lines += ["", f"Authorization: {auth}."]
    params = op.get("parameters", [])
    if params:
        lines += ["", "| parameter | in | type | description |", "|---|---|---|---|"]
        for p in params:
            lines.append(
                f"| `{p['name']}` | {p['in']} | {_cell(_type(doc, p.get('schema', {})))} "
                f"| {_cell(p.get('description', ''))} |"
            )
    body = op.get("requestBody")
    if body:
        schema = _json_schema(doc, body)
        if schema is not None:
            need = "required" if body.get("required") else "optional"
            lines += ["", f"Request body ({need}): {_model_link(doc, schema)}."]
    lines += ["", "| status | meaning | body |", "|---|---|---|"]
    for status, response in op.get("responses", {}).items():
        resolved = _resolve(doc, response)
        schema = _json_schema(doc, response)
        shown = _model_link(doc, schema) if schema is not None else ""
        lines.append(f"| {status} | {_cell(resolved.get('description', ''))} | {shown} |")
    return [*lines, ""]


def _used_models(doc: Mapping[str, Any]) -> list[str]:
    return sorted(doc.get("components", {}).get("schemas", {}))


def render(doc: Mapping[str, Any]) -> str:
    """The whole page; deterministic, so a stale file is a plain text difference."""
    lines = [
        "# API reference",
        "",
        f"Generated from `GET /openapi.json` by `{REGENERATE}`: do not edit by hand. The",
        "prose guides are [tenant-api.md](tenant-api.md), [platform-api.md](platform-api.md),",
        "[delivery.md](delivery.md) and [receiving.md](receiving.md).",
        "",
        "Every error answer has the shape "
        '`{"error": {"type": ..., "message": ..., "errors": [{"field": ..., "message": ...}]}}`'
        " (`ErrorBody`); a 401 carries `WWW-Authenticate: Bearer`.",
        "",
    ]
    by_tag: dict[str, list[tuple[str, str, Mapping[str, Any]]]] = {}
    for path, item in doc["paths"].items():
        for method, op in item.items():
            by_tag.setdefault(op.get("tags", ["other"])[0], []).append((method, path, op))
    order = [t for t in _TAG_TITLES if t in by_tag] + sorted(set(by_tag) - set(_TAG_TITLES))
    lines += ["## Routes", ""]
    for tag in order:
        for method, path, op in by_tag[tag]:
            lines.append(f"- `{method.upper()} {path}`: {_cell(op.get('summary', ''))}")
    lines.append("")
    for tag in order:
        lines += [f"## {_TAG_TITLES.get(tag, tag.title())}", ""]
        for method, path, op in by_tag[tag]:
            lines += _operation(doc, method, path, op)
    lines += ["## Schemas", ""]
    schemas = doc.get("components", {}).get("schemas", {})
    for name in _used_models(doc):
        model = schemas[name]
        lines += [f"### `{name}`", ""]
        if model.get("description"):
            lines += [_cell(model["description"]), ""]
        if model.get("properties"):
            lines += [*_fields(doc, model), ""]
        elif "enum" in model:
            lines += ["One of " + ", ".join(f"`{v}`" for v in model["enum"]) + ".", ""]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m api.apidoc", description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail when the file is stale")
    parser.add_argument("--path", type=Path, default=DEFAULT_PATH)
    args = parser.parse_args(argv)
    text = render(current_document())
    if args.check:
        current = args.path.read_text("utf-8") if args.path.is_file() else ""
        if current != text:
            print(f"{args.path} is stale: run `{REGENERATE}`", file=sys.stderr)
            return 1
        return 0
    args.path.write_text(text, encoding="utf-8")
    print(f"wrote {args.path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
