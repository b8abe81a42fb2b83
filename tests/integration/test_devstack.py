"""`make run` stops completely: a SIGTERM to its process group, or its stack killed outright,
leaves no process of it running and no port of it open."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ml_common.settings import PLACEHOLDER_SECRETS
from tests.conftest import MODEL_DIR, ROOT, need, storage_env

pytestmark = pytest.mark.integration

READY = "Ctrl-C stops everything."
SIGTERM_TWICE = "SIGTERM to make's process group, again mid-shutdown"
PORT_LINES = re.compile(r"(?:Valkey on port |127\.0\.0\.1:)(\d+)")


def _stat(pid: int) -> tuple[int, str, str] | None:
    """(parent pid, state, start time) of `pid`, or None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return int(fields[1]), fields[0], fields[19]


def descendants(root: int) -> dict[int, str]:
    """`root` and every process below it, each with its start time (pids can be reused)."""
    table = {int(p.name): _stat(int(p.name)) for p in Path("/proc").iterdir() if p.name.isdigit()}
    found = {root: table[root][2]} if table.get(root) else {}
    grew = True
    while grew:
        below = {pid: s[2] for pid, s in table.items() if s and s[0] in found and pid not in found}
        found |= below
        grew = bool(below)
    return found


def alive(pid: int, started: str) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[2] == started and stat[1] != "Z"


def cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:120]
    return "?"


def listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
        return True
    return False


@dataclass
class MakeRun:
    proc: subprocess.Popen[bytes]
    log: Path

    def wait_ready(self, timeout_s: float = 300) -> list[int]:
        """Wait for devstack's "ready" line; returns the ports it announced."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            text = self.log.read_text(errors="replace")
            if READY in text:
                return sorted({int(p) for p in PORT_LINES.findall(text)})
            assert self.proc.poll() is None, f"make run exited {self.proc.returncode}:\n{text}"
            time.sleep(0.5)
        raise AssertionError(f"make run not ready after {timeout_s}s:\n{text}")


@pytest.fixture
def make_run(tmp_path: Path) -> Iterator[MakeRun]:
    """`make run` as a person starts it (embedded Valkey, worker, API, web client), in a process
    group of its own; the install and model steps are taken as done."""
    need(MODEL_DIR.is_dir(), f"no converted model at {MODEL_DIR}: run `make model`")
    need(shutil.which("make") is not None, "make is not installed")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ML_")}
    env |= storage_env(tmp_path / "storage")
    # any free ports, not 8000 and 8080: CI runs two suites at once, each with this test
    env |= {"ML_MODEL_DIR": str(MODEL_DIR), "ML_API_PORT": "0", "ML_CLIENT_PORT": "0",
            "ML_ENVIRONMENT": "development", "ML_WORKERS": "1"}  # fmt: skip
    log = tmp_path / "make-run.log"
    command = ["make", "--no-print-directory", "-o", "install", "-o", "model", "run",
               f"PY={sys.executable}"]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    try:
        yield MakeRun(proc, log)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _stop(run: MakeRun, how: str, pids: dict[int, str]) -> None:
    if how == SIGTERM_TWICE:
        os.killpg(run.proc.pid, signal.SIGTERM)  # make passes it on: devstack gets two
        deadline = time.monotonic() + 30
        while "stopping" not in run.log.read_text() and time.monotonic() < deadline:
            time.sleep(0.02)
        with contextlib.suppress(ProcessLookupError):  # an impatient second one, mid-shutdown
            os.killpg(run.proc.pid, signal.SIGTERM)
    else:
        devstack = [p for p in pids if "ml_tools.devstack" in cmdline(p)]
        assert len(devstack) == 1, {p: cmdline(p) for p in pids}
        os.kill(devstack[0], signal.SIGKILL)
    run.proc.wait(120)


@pytest.mark.parametrize("how", [SIGTERM_TWICE, "SIGKILL to devstack alone"])
def test_make_run_leaves_nothing_running(make_run: MakeRun, how: str, record_property: Any) -> None:
    """make run stopped: no process and no port of it is left."""
    record_property("case", "`make run` stopped")
    ports = make_run.wait_ready()
    pids = descendants(make_run.proc.pid)
    names = {p: cmdline(p) for p in pids}
    assert any("uvicorn ml_api" in n for n in names.values()), names
    assert any("celery" in n for n in names.values()), names
    assert any("ml_celery.deliveries" in n for n in names.values()), names  # the webhook worker
    assert all(listening(port) for port in ports), ports
    _stop(make_run, how, pids)
    deadline = time.monotonic() + 60
    while (left := [p for p, s in pids.items() if alive(p, s)]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, {p: names[p] for p in left}
    assert not [port for port in ports if listening(port)]
    record_property("observed", f"all {len(pids)} processes ended (make, devstack, Valkey, worker "
                    f"and its pool, API, web client); ports {ports} closed")  # fmt: skip


def test_make_run_signs_with_a_secret_of_its_own(make_run: MakeRun, tmp_path: Path) -> None:
    """With no ML_SECRET_KEY, `make run` makes a random one, kept 0600 in ml-storages"""
    make_run.wait_ready()
    secret_file = tmp_path / "storage" / "secret-key"
    assert secret_file.stat().st_mode & 0o777 == 0o600
    secret = secret_file.read_text().strip()
    assert secret not in PLACEHOLDER_SECRETS and len(secret) >= 32
    apps = [p for p in descendants(make_run.proc.pid) if "ml_api.app" in cmdline(p)]
    assert apps, "no API process"
    environ = Path(f"/proc/{apps[0]}/environ").read_bytes().split(b"\0")
    assert f"ML_SECRET_KEY={secret}".encode() in environ
