"""Bad-input tests report each case and the answers it got into the reliability report."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

REPORTED_MODULES = (
    "test_api_input",
    "test_security",
    "test_web_security",
    "test_redis_acl",
    "test_batch_input",
)


def _case(item: pytest.Item) -> str:
    func = getattr(item, "function", None)
    doc = (func.__doc__ or "").strip().splitlines() if func else []
    title = doc[0].rstrip(".") if doc else item.name.split("[")[0].removeprefix("test_")
    title = title.replace("_", " ")
    callspec = getattr(item, "callspec", None)
    return f"{title} [{callspec.id}]" if callspec else title


def _answer(response: Any) -> str:
    code = ""
    if response.is_closed and "json" in response.headers.get("content-type", ""):
        body = response.json()
        code = body.get("code", "") if isinstance(body, dict) else ""
    return f"{response.status_code} {code}".strip()


@pytest.fixture(autouse=True)
def _report_bad_input(
    request: pytest.FixtureRequest, record_property: Callable[[str, object], None],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[None]:  # fmt: skip
    if not request.module.__name__.endswith(REPORTED_MODULES):
        yield
        return
    answers: list[str] = []
    for name in ("httpx", "httpx2"):
        try:
            client_cls = importlib.import_module(name).Client
        except ImportError:
            continue
        original = client_cls.send

        def send(self: Any, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            response = _original(self, *args, **kwargs)
            answers.append(_answer(response))
            return response

        monkeypatch.setattr(client_cls, "send", send)
    record_property("case", _case(request.node))
    yield
    record_property("observed", ", ".join(dict.fromkeys(answers)))
