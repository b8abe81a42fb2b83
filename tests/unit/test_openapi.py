"""The OpenAPI document's refinements (ml_api/openapi.py) and the 405 answer's Allow header: what
generated clients and schemathesis rely on (tests/integration/test_openapi.py drives them)."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ml_api.app import create_app
from ml_api.openapi import refine_document
from ml_common.errors import InvalidCallbackUrl
from ml_common.settings import Settings
from ml_common.webhooks import check_callback_url

Doc = dict[str, Any]


@pytest.fixture
def doc(settings: Settings) -> Doc:
    return create_app(settings).openapi()


def form(doc: Doc, path: str) -> Doc:
    schema = doc["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    if "$ref" in schema:
        schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    properties: Doc = schema["properties"]
    return properties


def test_upload_fields_are_files_in_both_styles(doc: Doc) -> None:
    both = {"type": "string", "format": "binary", "contentMediaType": "application/octet-stream"}
    assert form(doc, "/api/v1/detections")["file"].items() >= both.items()
    assert form(doc, "/api/v1/batches")["files"]["items"].items() >= both.items()


def test_a_raw_body_upload_is_a_file_too(settings: Settings) -> None:
    """The shape a raw-body upload (`image/*`, `application/octet-stream`) takes in FastAPI's
    document: with contentMediaType only, or with no schema at all."""
    body = {
        "application/octet-stream": {
            "schema": {"type": "string", "contentMediaType": "application/octet-stream"}
        },
        "image/*": {},
    }
    raw: Doc = {"paths": {"/up": {"post": {"requestBody": {"content": body}, "responses": {}}}}}
    refine_document(raw, settings)
    for media in body.values():
        assert media["schema"]["format"] == "binary"
        assert media["schema"]["contentMediaType"] == "application/octet-stream"


def test_every_error_answers_error_out(doc: Doc) -> None:
    errors = {
        (path, method, status): response["content"]["application/json"]["schema"]
        for path, item in doc["paths"].items()
        for method, operation in item.items()
        for status, response in operation["responses"].items()
        if status[0] in "45"
    }
    assert len(errors) > 50
    health = {("/readyz", "get", "503")}  # the probe's 503 lists its checks
    assert all(s == {"$ref": "#/components/schemas/ErrorOut"} for k, s in errors.items()
               if k not in health), errors  # fmt: skip
    assert "HTTPValidationError" not in doc["components"]["schemas"]


def test_form_fields_say_what_the_server_takes(doc: Doc, settings: Settings) -> None:
    single, batch = form(doc, "/api/v1/detections"), form(doc, "/api/v1/batches")
    for fields in (single, batch):
        assert "anyOf" not in fields["model"] and "anyOf" not in fields["callback_url"]
        assert fields["model"]["enum"] == ["nanodet-g-416", ""]  # "" is the default, as absent
        assert fields["callback_url"]["maxLength"] == 2048
    assert batch["files"]["minItems"] == 1
    # /api/docs "Try it out" sends the examples: optional fields start empty, not "string"
    assert single["callback_url"]["examples"] == single["original_size"]["examples"] == [""]
    assert batch["original_size"]["examples"] == [[]]


def test_min_score_says_the_deployments_floor_and_starts_empty(
    doc: Doc, settings: Settings
) -> None:
    for path in ("/api/v1/detections", "/api/v1/batches"):
        field = form(doc, path)["min_score"]
        assert (field["type"], field["minimum"], field["maximum"]) == ("number", 0.05, 1)
        assert field["examples"] == [""]  # "Try it out" sends no number: the threshold applies
        [query] = [p for p in doc["paths"][path]["post"]["parameters"] if p["name"] == "min_score"]
        assert (query["schema"]["minimum"], query["schema"]["maximum"]) == (0.05, 1)
        assert "examples" not in query and "default" not in query["schema"]


@pytest.mark.parametrize(
    "url",
    ["", "https://example.com/hook", "http://example.com:8080/h?x=1", "https://[2001:db8::1]/",
     "http://a:65535", "HTTP://example.com/", "http://a:65536/", "https://a@example.com/",
     "http://[1.2.3.4]/", "https://e xample.com/", "ftp://x/", "http://a\n"],
)  # fmt: skip
def test_the_documented_pattern_is_the_servers_check(doc: Doc, url: str) -> None:
    pattern = form(doc, "/api/v1/detections")["callback_url"]["pattern"]
    try:
        accepted = url == "" or check_callback_url(url) == url
    except InvalidCallbackUrl:
        accepted = False
    # JSON Schema patterns are searched, not matched; the pattern anchors itself
    assert bool(re.search(pattern, url) and "\n" not in url) is accepted


def test_operation_ids_are_the_route_names(doc: Doc) -> None:
    ids = [op["operationId"] for item in doc["paths"].values() for op in item.values()]
    assert "create_detection" in ids and "export_batch" in ids and len(set(ids)) == len(ids)


@pytest.mark.parametrize(
    ("path", "allowed"),
    [("/api/v1/batches/{id}", "GET, DELETE"), ("/api/v1/detections/{id}/deliveries", "GET, POST"),
     ("/api/v1/detections", "POST"), ("/api/v1/models", "GET")],
)  # fmt: skip
def test_405_allows_every_method_of_the_path(settings: Settings, path: str, allowed: str) -> None:
    client = TestClient(create_app(settings))
    answer = client.request("PUT", path.format(id=uuid.uuid4()))
    assert answer.status_code == 405
    assert answer.headers["allow"] == allowed
    assert answer.json()["code"] == "method_not_allowed"
