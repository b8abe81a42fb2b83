"""A small typed client of the mlprod API (sync and async) and the `mlprod detect` command."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlprod_client.client import ApiError, AsyncClient, BatchProgress, Client

__all__ = ["ApiError", "AsyncClient", "BatchProgress", "Client"]


def __getattr__(name: str) -> Any:
    """The client's names, imported when first used: `mlprod_client.command` (the `mlprod`
    entry point) must load without httpx, in images that have the server but not the SDK."""
    if name in __all__:
        from mlprod_client import client

        return getattr(client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
