"""The `mlprod` entry point: it loads without the SDK's dependencies (the API image has the
server's commands but no httpx), and says what is missing when `detect` needs them."""

from __future__ import annotations

import subprocess
import sys

# a Python in which httpx cannot be imported, as in the API image
WITHOUT_HTTPX = "import sys; sys.modules['httpx'] = None; "


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_HTTPX + code], capture_output=True, text=True, timeout=60
    )


def test_the_server_commands_run_without_httpx() -> None:
    done = _run("from mlprod_client.command import entry; raise SystemExit(entry(['--help']))")
    assert done.returncode == 0, done.stderr
    assert "api-key" in done.stdout and "cleanup" in done.stdout


def test_detect_without_httpx_says_what_is_missing() -> None:
    done = _run("from mlprod_client.command import entry; raise SystemExit(entry(['detect', 'x']))")
    assert done.returncode == 2
    assert "httpx" in done.stderr and "mlprod[sdk]" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_client_names_still_import_from_the_package() -> None:
    from mlprod_client import ApiError, Client

    assert Client.__name__ == "Client" and issubclass(ApiError, Exception)
