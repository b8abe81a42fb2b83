"""The OpenAPI document as client generators, schema fuzzers and /api/docs read it: FastAPI's
document, refined once in this one place (`DetectionAPI.openapi` calls `refine_document`).

- Files: `format: binary` beside OpenAPI 3.1's `contentMediaType`, since many generators
  (openapi-python-client, openapi-zod-client, ng-openapi-gen) and Swagger UI's file picker
  still recognise a file only by the former; a raw-body upload's schema gets both too.
- Errors: every error status answers `ErrorOut` (`{"code", "detail"}`), never FastAPI's
  `HTTPValidationError`, since that is what `ml_api.errors` sends.
- Form fields and parameters: a multipart field or a parameter cannot be `null` (an absent one
  is), so `anyOf [X, null]` becomes X; `model` names this deployment's models; `callback_url`
  carries the server's own pattern; `min_score` the deployment's floor; a batch has at least
  one file and at most the limit.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ml_common.models import served_models
from ml_common.schemas import ErrorOut
from ml_common.settings import Settings
from ml_common.webhooks import CALLBACK_URL_PATTERN, MAX_CALLBACK_URL

Schema = dict[str, Any]
ERROR_REF = {"$ref": "#/components/schemas/ErrorOut"}
FRAMEWORK_ERRORS = ("HTTPValidationError", "ValidationError")
METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
OCTET_STREAM = "application/octet-stream"


def refine_document(doc: Schema, settings: Settings) -> Schema:
    """Refine FastAPI's document in place (see the module's docstring) and return it."""
    schemas: Schema = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas.setdefault("ErrorOut", ErrorOut.model_json_schema())
    for operation in _operations(doc):
        _name_the_form(operation, schemas)
        _answer_error_out(operation)
        for field_name, field in _fields(operation, schemas):
            _constrain(field_name, field, settings)
        _empty_by_default(_form(operation, schemas))
        _binary_bodies(operation)
    for name in FRAMEWORK_ERRORS:
        schemas.pop(name, None)
    _mark_binary(doc)
    return doc


def _operations(doc: Schema) -> Iterator[Schema]:
    for path_item in doc.get("paths", {}).values():
        yield from (path_item[m] for m in METHODS if m in path_item)


def _name_the_form(operation: Schema, schemas: Schema) -> None:
    """A multipart form written out in the operation (the upload that also takes a raw body)
    becomes a named schema, `Body_<operationId>`, as FastAPI names its own forms: generators
    make a model class of it (openapi-python-client: `BodyCreateDetection`)."""
    content = operation.get("requestBody", {}).get("content", {})
    form = content.get("multipart/form-data", {})
    # only beside other media types: a form alone keeps the name generators give it
    alone = len(content) == 1
    if not alone and "properties" in form.get("schema", {}) and "operationId" in operation:
        name = f"Body_{operation['operationId']}"
        schemas[name] = {"title": name, **form["schema"]}
        form["schema"] = {"$ref": f"#/components/schemas/{name}"}


def _answer_error_out(operation: Schema) -> None:
    """Every 4xx and 5xx that documents JSON (or nothing) answers ErrorOut."""
    for status, response in operation.get("responses", {}).items():
        if status[0] not in "45":
            continue
        content = response.setdefault("content", {})
        schema = content.get("application/json", {}).get("schema", {})
        if not schema or schema.get("$ref", "").rsplit("/", 1)[-1] in FRAMEWORK_ERRORS:
            content["application/json"] = {"schema": dict(ERROR_REF)}


def _fields(operation: Schema, schemas: Schema) -> Iterator[tuple[str, Schema]]:
    """(name, schema) of each parameter and each multipart form field of the operation."""
    for parameter in operation.get("parameters", []):
        if "schema" in parameter:
            yield parameter["name"], parameter["schema"]
    yield from _form(operation, schemas).get("properties", {}).items()


def _form(operation: Schema, schemas: Schema) -> Schema:
    """The schema of the operation's multipart form (empty when it takes none)."""
    content = operation.get("requestBody", {}).get("content", {})
    form: Schema = content.get("multipart/form-data", {}).get("schema", {})
    if "$ref" in form:
        form = schemas.get(form["$ref"].rsplit("/", 1)[-1], {})
    return form


def _empty_by_default(form: Schema) -> None:
    """An optional text field's example is empty, an optional list's has no item: /api/docs
    "Try it out" fills a form with the examples, and its own ("string") would be sent."""
    empty = {"string": "", "array": [], "number": ""}  # an empty field is as absent
    for name, field in form.get("properties", {}).items():
        if name in form.get("required", ()) or field.get("type") not in empty:
            continue
        if not {"enum", "examples", "example", "default", "format"} & field.keys():
            field["examples"] = [empty[field["type"]]]


def _constrain(name: str, field: Schema, settings: Settings) -> None:
    """Say what the server requires of the field, and drop a `null` it cannot be sent as."""
    variants = field.get("anyOf", [])
    if len(variants) == 2 and {"type": "null"} in variants:
        field.pop("anyOf")
        field.update(next(v for v in variants if v != {"type": "null"}))
        if field.get("default", "") is None:
            field.pop("default")
    if name == "model":
        # an empty field is the default model, as an absent one
        field["enum"] = [*served_models(settings), ""]
    elif name == "callback_url":
        # empty: the key's own callback (none by default), as when absent
        field.update(pattern=f"^$|{CALLBACK_URL_PATTERN}", maxLength=MAX_CALLBACK_URL)
    elif name == "min_score":  # the deployment's floor, which the server checks
        field["minimum"] = settings.min_score_floor
    elif name == "files" and field.get("type") == "array":
        field["minItems"] = 1  # more than ML_BATCH_MAX_FILES: 413, as for bytes


def _binary_bodies(operation: Schema) -> None:
    """A raw upload (`application/octet-stream`, `image/*`) documented without a schema."""
    for media, body in operation.get("requestBody", {}).get("content", {}).items():
        if (media == OCTET_STREAM or media.startswith("image/")) and not body.get("schema"):
            body["schema"] = {"type": "string", "contentMediaType": OCTET_STREAM}


def _mark_binary(node: Any) -> None:
    """Every string schema of a file carries both `format: binary` and `contentMediaType`."""
    if isinstance(node, list):
        for item in node:
            _mark_binary(item)
        return
    if not isinstance(node, dict):
        return
    if node.get("type") == "string":
        if "contentMediaType" in node:
            node.setdefault("format", "binary")
        elif node.get("format") == "binary":
            node["contentMediaType"] = OCTET_STREAM
    for value in node.values():
        _mark_binary(value)
