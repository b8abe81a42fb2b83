"""The `k8s` marker: tests of the manifests that scripts/k8s_ci.sh plays with podman. They run
only when selected with `-m k8s`; `make test`'s `-m ""` leaves them out."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "k8s: the pods scripts/k8s_ci.sh plays from deploy/k8s (only with -m k8s)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leave the k8s tests out unless the marker expression names them."""
    if "k8s" in (config.getoption("markexpr") or ""):
        return
    left_out = [item for item in items if item.get_closest_marker("k8s")]
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = [item for item in items if not item.get_closest_marker("k8s")]
