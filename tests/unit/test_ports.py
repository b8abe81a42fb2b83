"""`make run`'s ports: fixed ones when free, a clear message when taken, any free one for 0."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from ml_tools.devstack import Stack
from ml_tools.ports import API_PORT, CLIENT_PORT, PortTaken, claim_port


def test_the_defaults_are_the_usual_ports() -> None:
    assert (API_PORT, CLIENT_PORT) == (8000, 8080)


def test_zero_is_any_free_port_as_the_tests_use(tmp_path: Path) -> None:
    stack = Stack({}, tmp_path)
    assert stack.api_port > 0 and stack.client_port > 0
    assert stack.api_port != stack.client_port
    assert stack.api_url == f"http://127.0.0.1:{stack.api_port}"


def test_a_free_fixed_port_is_kept_and_a_taken_one_is_refused_in_words(tmp_path: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        taken = listener.getsockname()[1]
        with pytest.raises(PortTaken) as caught:
            Stack({}, tmp_path, api_port=taken)
        assert f"port {taken} for the API is taken" in caught.value.detail
        assert f"ML_API_PORT={taken + 1} make run" in caught.value.detail
        with pytest.raises(PortTaken, match="for the web client"):
            claim_port(taken, "the web client", "ML_CLIENT_PORT")
    assert claim_port(taken, "the API", "ML_API_PORT") == taken  # free again
