"""The web client's batch endpoints (/app/batches, /app/models) in front of the real API app."""

from __future__ import annotations

import json
import re

import httpx

from tests.unit.test_client_routes import Stack, jpeg, sign_in
from tests.unit.test_client_routes import stack as stack  # the fixture

NAMES = ["a.jpg", "b.jpg", "notes.jpg"]


def send(stack: Stack, token: str | None, names: list[str], **data: str) -> httpx.Response:
    files = [("files", (n, b"text" if n == "notes.jpg" else jpeg(), "image/jpeg")) for n in names]
    headers = {"X-CSRF-Token": token} if token else {}
    return stack.client.post("/app/batches", files=files, data=data, headers=headers)


def test_a_batch_reaches_the_api_in_order_and_each_item_joins_the_history(stack: Stack) -> None:
    token = sign_in(stack.client)
    response = send(stack, token, NAMES)
    assert response.status_code == 202, response.text
    body = response.json()
    assert [i["file_name"] for i in body["items"]] == NAMES
    assert [i["status"] for i in body["items"]] == ["queued", "queued", "failed"]
    assert len(stack.queue.submitted) == 2  # the text file failed alone, at the API
    listed = {t["task_id"] for t in stack.client.get("/app/tasks").json()["tasks"]}
    assert listed == {i["task_id"] for i in body["items"]}
    first = body["items"][0]["task_id"]
    assert stack.client.get(f"/app/tasks/{first}/original").content == jpeg()


def test_export_is_named_after_the_day_and_size_and_others_get_404(stack: Stack) -> None:
    token = sign_in(stack.client)
    body = send(stack, token, NAMES[:2]).json()
    for item in body["items"]:
        stack.finish(item["task_id"])
    found = stack.client.get(f"/app/batches/{body['batch_id']}").json()
    assert found["counts"]["succeeded"] == 2 and found["finished"]
    coco = stack.client.get(f"/app/batches/{body['batch_id']}/export?format=coco")
    assert coco.status_code == 200
    assert coco.headers["content-disposition"].endswith('-2-images.coco.json"')
    assert [i["file_name"] for i in json.loads(coco.content)["images"]] == NAMES[:2]
    csv = stack.client.get(f"/app/batches/{body['batch_id']}/export?format=csv")
    assert csv.headers["content-disposition"].endswith('-2-images.csv"')
    assert "person" in csv.text
    bad = stack.client.get(f"/app/batches/{body['batch_id']}/export?format=zip")
    assert bad.status_code == 422
    sign_in(stack.client, "bob")
    other = stack.client.get(f"/app/batches/{body['batch_id']}")
    assert other.status_code == 404 and other.json()["code"] == "batch_not_found"


def test_the_model_choice_goes_with_the_batch(stack: Stack) -> None:
    token = sign_in(stack.client)
    models = stack.client.get("/app/models").json()
    response = send(stack, token, ["a.jpg"], model=models["default"])
    assert response.status_code == 202, response.text
    unknown = send(stack, token, ["a.jpg"], model="no-such-model")
    assert unknown.status_code == 422 and "no-such-model" in unknown.json()["detail"]


def test_a_batch_needs_the_token_a_session_and_a_file(stack: Stack) -> None:
    assert send(stack, "anything", NAMES).status_code == 401
    token = sign_in(stack.client)
    assert send(stack, None, NAMES).status_code == 403
    empty = stack.client.post("/app/batches", data={"x": "1"}, headers={"X-CSRF-Token": token})
    assert empty.status_code == 422
    too_large = [("files", ("big.jpg", b"\xff" * 300_000, "image/jpeg"))]
    big = stack.client.post("/app/batches", files=too_large, headers={"X-CSRF-Token": token})
    assert big.status_code == 413
    assert stack.queue.submitted == {}


def test_each_item_keeps_its_batch_in_the_history_and_a_refused_one_its_code(
    stack: Stack,
) -> None:
    """The page offers a batch's exports after a reload (the history names the batch), and
    words a refused item as a single upload of it (the page is told the refusals' codes)."""
    token = sign_in(stack.client)
    body = send(stack, token, NAMES).json()
    tasks = stack.client.get("/app/tasks").json()["tasks"]
    assert {t["task_id"]: t["batch_id"] for t in tasks} == {
        i["task_id"]: body["batch_id"] for i in body["items"]
    }
    page = stack.client.get("/").text
    found = re.search(r'<script type="application/json" id="refusals">(.*?)</script>', page)
    assert found is not None
    refusals = json.loads(found.group(1))
    assert refusals["invalid_image"] == 422 and refusals["unsupported_media_type"] == 415
    refused = body["items"][2]
    assert refused["status"] == "failed" and refused["error"]["type"] in refusals


def test_a_compare_upload_is_kept_as_such_and_a_bad_group_is_refused(stack: Stack) -> None:
    token = sign_in(stack.client)
    group = "6f1c2a3e-0000-4000-8000-000000000001"
    headers = {"X-CSRF-Token": token}
    files = {"file": ("a.jpg", jpeg(), "image/jpeg")}
    sent = stack.client.post("/app/uploads", files=files, data={"compare": group}, headers=headers)
    assert sent.status_code == 202, sent.text
    tasks = stack.client.get("/app/tasks").json()["tasks"]
    assert [t["compare_id"] for t in tasks if t["task_id"] == sent.json()["task_id"]] == [group]
    bad = stack.client.post("/app/uploads", files=files, data={"compare": "x"}, headers=headers)
    assert bad.status_code == 422 and bad.json()["code"] == "validation_error"


def test_the_pages_min_score_goes_with_the_batch_and_a_bad_one_is_422(stack: Stack) -> None:
    token = sign_in(stack.client)
    response = send(stack, token, ["a.jpg"], min_score="0.05")
    assert response.status_code == 202, response.text
    [payload] = stack.queue.submitted.values()
    assert payload["min_score"] == 0.05
    bad = send(stack, token, ["a.jpg"], min_score="0.01")
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_min_score"


def test_the_page_exports_a_batch_for_labelling_tools(stack: Stack) -> None:
    token = sign_in(stack.client)
    body = send(stack, token, NAMES[:2]).json()
    for item in body["items"]:
        stack.finish(item["task_id"])
    base = f"/app/batches/{body['batch_id']}/export"
    tasks = stack.client.get(f"{base}?format=labelstudio")
    assert tasks.headers["content-disposition"].endswith('-2-images.labelstudio.json"')
    assert [t["data"]["image"] for t in tasks.json()] == NAMES[:2]
    for fmt in ("yolo", "voc"):
        archive = stack.client.get(f"{base}?format={fmt}")
        assert archive.status_code == 200 and archive.content[:2] == b"PK"
