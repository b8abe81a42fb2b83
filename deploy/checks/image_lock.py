"""Check that an image's Python packages are exactly those uv.lock pins for its extra.

scripts/compose_ci.sh runs, for each image, ``python -`` inside it with ``--probe`` (the
marker environment and every installed distribution, as JSON), then this module on the
machine with the image's answer on stdin::

    podman run --rm -i IMAGE python - --probe < deploy/checks/image_lock.py > probe.json
    .venv/bin/python deploy/checks/image_lock.py EXTRA < probe.json

The wanted set is ``uv export --frozen --extra EXTRA`` with each line's marker evaluated in the
image's own environment. Exit 1, naming each package, when one is missing, extra or of another
version. pip and setuptools (removed from the images) and the project itself are left out.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

IGNORED = {"mlprod", "pip", "setuptools", "wheel"}


def normalise(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def probe() -> dict[str, object]:
    """The image's marker environment (PEP 508) and its installed distributions."""
    info = sys.implementation.version
    env = {
        "implementation_name": sys.implementation.name,
        "implementation_version": f"{info.major}.{info.minor}.{info.micro}",
        "os_name": os.name,
        "platform_machine": platform.machine(),
        "platform_release": platform.release(),
        "platform_system": platform.system(),
        "platform_version": platform.version(),
        "python_full_version": platform.python_version(),
        "platform_python_implementation": platform.python_implementation(),
        "python_version": ".".join(platform.python_version_tuple()[:2]),
        "sys_platform": sys.platform,
    }
    dists = {normalise(d.metadata["Name"]): d.version for d in metadata.distributions()}
    return {"env": env, "dists": dists}


def locked(extra: str, env: dict[str, str]) -> dict[str, str]:
    """uv.lock's pins for EXTRA (comma-separated extras) whose markers hold in ENV."""
    from packaging.markers import Marker

    root = Path(__file__).resolve().parents[2]
    uv = Path(sys.executable).with_name("uv")
    out = subprocess.run(
        [
            str(uv),
            "export",
            "--project",
            str(root),
            "--frozen",
            "--no-emit-project",
            "--no-hashes",
            "--no-header",
            "--no-annotate",
            "--format",
            "requirements-txt",
            *(arg for name in extra.split(",") for arg in ("--extra", name)),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    pins: dict[str, str] = {}
    for line in out.splitlines():
        requirement, _, marker = line.partition(";")
        if "==" not in requirement or (marker.strip() and not Marker(marker).evaluate(env)):
            continue
        name, version = requirement.split("==")
        pins[normalise(name.split("[")[0].strip())] = version.strip()
    return pins


def differences(want: dict[str, str], have: dict[str, str]) -> list[str]:
    problems = []
    for name in sorted((want.keys() | have.keys()) - IGNORED):
        if name not in have:
            problems.append(f"{name}: locked {want[name]}, not installed")
        elif name not in want:
            problems.append(f"{name}: {have[name]} installed, not in uv.lock for this extra")
        elif want[name] != have[name]:
            problems.append(f"{name}: {have[name]} installed, uv.lock pins {want[name]}")
    return problems


def main(argv: list[str]) -> int:
    if argv == ["--probe"]:
        json.dump(probe(), sys.stdout)
        return 0
    if len(argv) != 1:
        sys.stderr.write(__doc__ or "")
        return 2
    image = json.load(sys.stdin)
    problems = differences(locked(argv[0], image["env"]), image["dists"])
    for problem in problems:
        sys.stdout.write(f"FAIL: {problem}\n")
    if not problems:
        count = len(image["dists"])
        sys.stdout.write(f"ok: {count} distributions, exactly uv.lock's ({argv[0]})\n")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
