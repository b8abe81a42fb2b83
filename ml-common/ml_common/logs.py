"""Process-wide logging set-up, called once per process (API lifespan, worker signal, CLI)."""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"


def configure_logging(level: str = "INFO") -> None:
    root = logging.getLogger()
    if not any(getattr(h, "_mlprod", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(FORMAT))
        handler._mlprod = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)
