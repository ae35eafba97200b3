"""The OpenAPI 3 document served at ``/api/v1/schema``.

drf-spectacular generates the paths from the real URL patterns and views. The
views of this API build their JSON bodies by hand (no model serializers), so
what it can infer stops at the routes; this module adds the rest:

- security schemes for our two auth classes (``Bearer <api-key>`` and
  ``Basic <session-id>``), which drf-spectacular cannot know;
- :func:`plain_text_errors`, for views that annotate themselves with
  ``extend_schema`` (the admin endpoints do);
- :func:`contract_overlay`, a post-processing hook that fills each generated
  operation from ``api_contract.yaml`` (the reference's requests, responses and
  error messages), so that views of other apps are described without
  decorating them. Only routes that exist are described: the overlay never
  adds a path, it completes the ones the URL patterns produce.
"""

from __future__ import annotations

import copy
import functools
import re
from pathlib import Path
from typing import Any

import yaml
from drf_spectacular.openapi import AutoSchema

from whisper_site.openapi import ADMIN_ERRORS, AUTH_ERRORS, PLAIN_TEXT

CONTRACT_PATH = Path(__file__).with_name("api_contract.yaml")
API_PREFIX = "/api/v1"
SECURITY_REQUIRED = [{"apiKey": []}, {"sessionId": []}]


class ContractAutoSchema(AutoSchema):
    """drf-spectacular's AutoSchema, quiet about views that have no serializer.

    Our APIViews build their bodies by hand on purpose; their bodies are
    described by :func:`contract_overlay` instead, so "unable to guess
    serializer" is not an error here.
    """

    def get_operation_id(self) -> str:
        # Stable ids from the contract: generated ones depend on each view's
        # action names and collide between list and detail routes.
        spec = contract().get(_operation_key(self.method, self.path.rstrip("/")))
        if spec is not None and "operation_id" in spec:
            return str(spec["operation_id"])
        return super().get_operation_id()

    def _get_serializer(self) -> Any:
        view = self.view
        if not any(hasattr(view, name) for name in ("get_serializer", "get_serializer_class", "serializer_class")):
            return None
        return super()._get_serializer()


# --- the post-processing hook -------------------------------------------------

_PARAM = re.compile(r"\{[^}]+\}")


def _operation_key(method: str, path: str) -> str:
    """``GET /file/{}``: path parameters named by each app its own way match alike."""
    if path.startswith(API_PREFIX):
        path = path[len(API_PREFIX) :]
    return f"{method.upper()} {_PARAM.sub('{}', path)}"


@functools.lru_cache(maxsize=1)
def contract() -> dict[str, dict[str, Any]]:
    """The operations of ``api_contract.yaml``, keyed like :func:`_operation_key`."""
    raw = yaml.safe_load(CONTRACT_PATH.read_text(encoding="utf-8"))
    return {_operation_key(*key.split(" ", 1)): value for key, value in raw["operations"].items()}


def _merge(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    merged = dict(first)
    for key, value in second.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        elif value is not None or key not in merged:
            merged[key] = value
    return merged


def schema_from_example(example: Any) -> dict[str, Any]:
    """A JSON Schema that the reference's example body is an instance of."""
    if example is None:
        # The reference's nulls stand for an object not there yet ("data") or an id.
        return {"type": "object", "nullable": True}
    if isinstance(example, bool):
        return {"type": "boolean"}
    if isinstance(example, int):
        return {"type": "integer"}
    if isinstance(example, float):
        return {"type": "number"}
    if isinstance(example, str):
        return {"type": "string"}
    if isinstance(example, list):
        if example and all(isinstance(item, dict) for item in example):
            # Items of one list differ by optional keys (an upload result has
            # "uuid" or "error"): the item schema has the keys of them all.
            merged: dict[str, Any] = {}
            for item in example:
                merged = _merge(merged, item)
            return {"type": "array", "items": schema_from_example(merged)}
        return {"type": "array", "items": schema_from_example(example[0]) if example else {}}
    return {
        "type": "object",
        "properties": {name: schema_from_example(value) for name, value in example.items()},
    }


def _mark_nullable(schema: dict[str, Any], names: dict[str, str | None]) -> dict[str, Any]:
    """Mark the named properties nullable, giving a type where the example's null could not."""
    for name, prop in schema.get("properties", {}).items():
        if name in names:
            prop["nullable"] = True
            if names[name]:
                prop["type"] = names[name]
        _mark_nullable(prop, names)
    if "items" in schema:
        _mark_nullable(schema["items"], names)
    for option in schema.get("oneOf", []):
        _mark_nullable(option, names)
    return schema


def _nullable_names(spec: dict[str, Any]) -> dict[str, str | None]:
    # `nullable: [a, b]`, or `nullable: {a: string}` where the example only shows null.
    names = spec.get("nullable", [])
    return dict(names) if isinstance(names, dict) else dict.fromkeys(names)


def _json_content(spec: dict[str, Any]) -> dict[str, Any]:
    schema = spec.get("schema") or schema_from_example(spec["example"])
    _mark_nullable(schema, _nullable_names(spec))
    content: dict[str, Any] = {"schema": schema}
    if "example" in spec:
        content["example"] = spec["example"]
    return {"application/json": content}


def _one_of_option(example: dict[str, Any]) -> dict[str, Any]:
    # The first key of each shape is the one that tells them apart ("uuid" of one
    # job, "transcriptions" of a file's jobs): requiring it makes exactly one match.
    schema = schema_from_example(example)
    schema["required"] = [next(iter(example))]
    return schema


def _request_body(spec: dict[str, Any]) -> dict[str, Any]:
    if "multipart" in spec:
        properties = {}
        for name, field in spec["multipart"].items():
            if field.get("binary"):
                item = {"type": "string", "format": "binary"}
                properties[name] = {"type": "array", "items": item} if field.get("many") else item
            else:
                properties[name] = {"type": field.get("type", "string")}
            if field.get("description"):
                properties[name]["description"] = field["description"]
        schema = {"type": "object", "properties": properties}
        return {"required": spec.get("required", False), "content": {"multipart/form-data": {"schema": schema}}}
    return {"required": spec.get("required", True), "content": _json_content(spec)}


def _error_responses(errors: list[tuple[int, str]]) -> dict[str, Any]:
    by_status: dict[int, list[str]] = {}
    for status, message in errors:
        by_status.setdefault(int(status), []).append(message)
    return {
        str(status): {
            "description": "One line of plain text: " + "; ".join(f'"{m}"' for m in messages),
            "content": {
                PLAIN_TEXT: {
                    "schema": {"type": "string"},
                    "examples": {f"{status}-{i}": {"value": m} for i, m in enumerate(messages, start=1)},
                }
            },
        }
        for status, messages in sorted(by_status.items())
    }


def _apply(operation: dict[str, Any], spec: dict[str, Any]) -> None:
    # The contract's words replace the view's docstring, written for developers.
    operation["summary"] = spec["summary"]
    operation["description"] = spec.get("description", "").strip()
    if "tags" in spec:
        operation["tags"] = spec["tags"]
    auth = spec.get("auth", "required")
    errors = [tuple(error) for error in spec.get("errors", [])]
    if auth == "none":
        operation["security"] = []
    else:
        operation["security"] = copy.deepcopy(SECURITY_REQUIRED)
        errors += AUTH_ERRORS + (ADMIN_ERRORS if auth == "admin" else [])
    for parameter in operation.get("parameters", []):
        if parameter.get("in") == "path":
            parameter["schema"] = {"type": "string"}
            parameter.setdefault("description", spec.get("path_parameter", "UUID: 32 hex digits (or hyphenated)."))
    for name, description in spec.get("query", {}).items():
        operation.setdefault("parameters", []).append(
            {"name": name, "in": "query", "required": False, "schema": {"type": "string"}, "description": description}
        )
    if "request" in spec:
        operation["requestBody"] = _request_body(spec["request"])
    else:
        operation.pop("requestBody", None)
    responses: dict[str, Any] = {}
    for status, response in spec.get("responses", {}).items():
        entry: dict[str, Any] = {"description": response.get("description", "OK")}
        if "binary" in response:
            entry["content"] = {
                media: {"schema": {"type": "string", "format": "binary"}} for media in response["binary"]
            }
        elif "one_of" in response:
            entry["content"] = {
                "application/json": {
                    "schema": _mark_nullable(
                        {"oneOf": [_one_of_option(value) for value in response["one_of"].values()]},
                        _nullable_names(response),
                    ),
                    "examples": {name: {"value": value} for name, value in response["one_of"].items()},
                }
            }
        elif "example" in response or "schema" in response:
            entry["content"] = _json_content(response)
        if "headers" in response:
            entry["headers"] = {
                name: {"schema": {"type": "string"}, "description": text} for name, text in response["headers"].items()
            }
        responses[str(status)] = entry
    responses.update(_error_responses(errors))
    operation["responses"] = responses


def _default_error(operation: dict[str, Any]) -> None:
    # Whatever else an operation answers, its errors are one line of plain text.
    responses = operation.setdefault("responses", {})
    if not any(PLAIN_TEXT in (r.get("content") or {}) for r in responses.values()):
        responses["default"] = {
            "description": "An error: one line of plain text with the status code.",
            "content": {PLAIN_TEXT: {"schema": {"type": "string"}}},
        }


def contract_overlay(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """``POSTPROCESSING_HOOKS`` entry: describe each routed operation as the reference does.

    Routes accept an optional trailing slash (``/?$``); the document writes
    each path once, as the reference does, without it.
    """
    operations = contract()
    paths: dict[str, Any] = {}
    for path, item in result.get("paths", {}).items():
        clean = path.rstrip("/") or "/"
        target = paths.setdefault(clean, {})
        for method, operation in item.items():
            if not isinstance(operation, dict) or method == "parameters":
                target[method] = operation
                continue
            spec = operations.get(_operation_key(method, clean))
            if spec is not None:
                _apply(operation, spec)
            _default_error(operation)
            target[method] = operation
    result["paths"] = paths
    result.setdefault("info", {})["description"] = _info_description()
    return result


def _info_description() -> str:
    return (
        "Self-hosted Whisper transcription: accounts, files, transcriptions and admin.\n\n"
        "Every success body is JSON. **Every error is one line of `text/plain`** with the "
        "status code shown (never JSON, never HTML). Identifiers are UUIDv7 written as 32 "
        "lowercase hex digits; timestamps are UTC `YYYY-MM-DD HH:MM:SS`.\n\n"
        "Authenticate with `Authorization: Bearer <api-key>` or `Authorization: Basic <session-id>` "
        "(the raw session id, no base64)."
    )
