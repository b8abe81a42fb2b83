"""Run in a venv with label-studio-sdk alone (extra `labelstudio-check`): validate each task's
predictions of a Label Studio import file against a labelling config with Label Studio's own
LabelInterface. Prints each error; exits 1 if any.

    python validate_tasks.py TASKS.json CONFIG.xml
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from label_studio_sdk.label_interface import LabelInterface


def main(tasks_file: str, config_file: str) -> int:
    interface = LabelInterface(Path(config_file).read_text())
    tasks = json.loads(Path(tasks_file).read_text())
    errors = []
    for n, task in enumerate(tasks):
        if not task.get("data", {}).get("image"):
            errors.append(f"task {n}: no data.image")
        for prediction in task.get("predictions", []):
            found = interface.validate_prediction(prediction, return_errors=True)
            errors += [f"task {n}: {error}" for error in found]
    sys.stdout.write("".join(f"{error}\n" for error in errors))
    sys.stdout.write(f"{len(tasks)} tasks checked\n")
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:]))
