"""`mlprod detect`'s exits and messages where no API answers, as a user runs it (the console
script in a subprocess): a missing path, nothing to send, an API that cannot be reached, and
Ctrl-C at any moment. With a stack: tests/integration/test_cli.py."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import MLPROD

TIMEOUT_S = 60


def mlprod(*args: str | Path, cwd: Path, key: str = "mlp_test") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MLPROD_API_KEY": key, "HOME": str(cwd)}
    return subprocess.run(
        [str(MLPROD), "detect", *map(str, args)], cwd=cwd, env=env, capture_output=True,
        text=True, timeout=TIMEOUT_S,
    )  # fmt: skip


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def silent_api() -> Iterator[str]:
    """An address that takes connections and never answers (a hung API)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def sigint_as_in_a_terminal() -> None:
    """Ctrl-C's default action in the child, as a terminal gives it. A background job of a
    non-interactive shell (.ci/run starts `make test` with `&`) inherits SIGINT ignored, and
    Python then installs no handler: the interrupt would be lost and the request run on."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def jpeg(path: Path) -> Path:
    from PIL import Image

    Image.new("RGB", (32, 24), (10, 200, 30)).save(path)
    return path


def test_a_missing_path_exits_2_naming_it(tmp_path: Path) -> None:
    jpeg(tmp_path / "cat.jpg")
    done = mlprod("no-such-folder", "cat.jpg", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr == "no-such-folder: no such file or directory\n"


def test_a_lone_text_file_is_skipped_by_name_and_nothing_is_sent(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    done = mlprod("notes.txt", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "skipped notes.txt: not an image by its name (.jpg, .jpeg, .png, .webp, .bmp or .gif)",
        "nothing to send: no image in notes.txt",
    ]
    assert not (tmp_path / "mlprod-results").exists()


def test_an_empty_folder_has_nothing_to_send(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    done = mlprod("empty", cwd=tmp_path)
    assert (done.returncode, done.stderr) == (2, "nothing to send: no image in empty\n")


def test_a_missing_ground_truth_file_exits_2(tmp_path: Path) -> None:
    jpeg(tmp_path / "cat.jpg")
    done = mlprod("cat.jpg", "--coco-gt", "annotations.json", cwd=tmp_path)
    assert (done.returncode, done.stderr) == (2, "annotations.json: no such file or directory\n")


def test_an_unreachable_api_is_one_line_and_exit_1(tmp_path: Path) -> None:
    jpeg(tmp_path / "cat.jpg")
    jpeg(tmp_path / "dog.jpg")
    url = f"http://127.0.0.1:{closed_port()}"
    for paths in (["cat.jpg"], ["cat.jpg", "dog.jpg"]):  # one request, and a batch
        done = mlprod(*paths, "--api", url, cwd=tmp_path)
        assert (done.returncode, done.stderr) == (1, f"cannot reach {url}: connection refused\n")


# moments to press Ctrl-C: while the SDK's modules load (the first few tenths of a second),
# and while a request waits on the API
@pytest.mark.parametrize("after_s", [0.2, 0.35, 0.5, 0.6, 1.5])
def test_ctrl_c_at_any_moment_exits_130_without_a_traceback(
    tmp_path: Path, silent_api: str, after_s: float
) -> None:
    jpeg(tmp_path / "cat.jpg")
    # without coverage's start-up in the child (`make test` measures subprocesses): its
    # tenths of a second only widen the interpreter's own window, below
    quiet = {k: v for k, v in os.environ.items() if not k.startswith(("COV_CORE", "COVERAGE_"))}
    env = {**quiet, "MLPROD_API_KEY": "mlp_test", "HOME": str(tmp_path)}
    command = [str(MLPROD), "detect", "cat.jpg", "--api", silent_api]
    with subprocess.Popen(
        command, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True,
        preexec_fn=sigint_as_in_a_terminal,
    ) as p:  # fmt: skip
        time.sleep(after_s)
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=TIMEOUT_S)
    # Python's own start (site's .pth imports, before a line of ours runs) can take a few
    # tenths of a second on a loaded machine, and an interrupt there is the interpreter's to
    # report; from the first line of our code on, there must be no traceback
    if "Traceback" in err and "mlprod_client/" not in err:
        assert p.returncode == -signal.SIGINT, err
        return
    assert "Traceback" not in err, err
    # a shell reads both as 130: our own exit, or (before the interpreter has its SIGINT
    # handler, in its first few milliseconds) the signal's default action, which prints nothing
    if p.returncode == -signal.SIGINT:
        assert err == "", err
    else:
        assert p.returncode == 130 and err.startswith("interrupted"), err
