#!/usr/bin/env python3
"""Container healthcheck for the mlprod images: stdlib only, since slim images ship no curl.

Usage:
    mlprod-healthcheck URL        GET URL; healthy on a 2xx answer within the timeout
    mlprod-healthcheck --broker   healthy when the broker in ML_BROKER_URL accepts a TCP connection
"""

from __future__ import annotations

import socket
import sys
import urllib.error
import urllib.request

TIMEOUT_S = 4.0
DEFAULT_PORTS = {"amqp": 5672, "pyamqp": 5672, "amqps": 5671, "redis": 6379, "rediss": 6379}


def check_url(url: str) -> str | None:
    """Return None when `url` answers 2xx, else the reason it is unhealthy."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            status = int(response.status)
    except (urllib.error.URLError, OSError) as exc:
        return f"{url}: {exc}"
    return None if 200 <= status < 300 else f"{url}: HTTP {status}"


def check_broker() -> str | None:
    """Return None when the configured broker accepts a TCP connection."""
    from ml_common.settings import get_settings  # the one place that reads ML_* variables

    url = get_settings().broker_url
    host = url.host or "localhost"
    port = url.port or DEFAULT_PORTS.get(url.scheme, 5672)
    try:
        with socket.create_connection((host, port), timeout=TIMEOUT_S):
            return None
    except OSError as exc:
        return f"broker {host}:{port}: {exc}"


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        sys.stderr.write(__doc__ or "")
        return 2
    problem = check_broker() if argv[0] == "--broker" else check_url(argv[0])
    if problem:
        sys.stderr.write(f"unhealthy: {problem}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
