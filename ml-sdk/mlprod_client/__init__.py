"""A small typed client of the mlprod API (sync and async) and the `mlprod detect` command."""

from mlprod_client.client import ApiError, AsyncClient, BatchProgress, Client

__all__ = ["ApiError", "AsyncClient", "BatchProgress", "Client"]
