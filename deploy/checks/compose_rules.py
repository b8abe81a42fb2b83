"""Deployment rules that `docker compose config` does not enforce (stdlib only).

Every service: a healthcheck, a restart policy, no-new-privileges, cap_drop ALL, no password on
a command line, no FORWARDED_ALLOW_IPS=*; only the proxy publishes ports. Every Dockerfile: a
pinned base, a HEALTHCHECK, a non-root USER, uvicorn trusting no forwarded address from anyone.

Usage:
    python deploy/checks/compose_rules.py stack RESOLVED.json   # docker-compose.yaml, resolved
    python deploy/checks/compose_rules.py tls RESOLVED.json     # ... + deploy/compose/tls.yaml
    python deploy/checks/compose_rules.py env-example COMPOSE_FILE...  # .env.example documents all
    python deploy/checks/compose_rules.py dockerfiles DOCKERFILE...
Exits 1 and prints one line per problem.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PUBLIC_SERVICE = "proxy"
SCALABLE_SERVICE = "ml-celery"
REQUIRED_VOLUMES = ("ml-storages", "redis-data")
VAR_RE = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)")
# A pinned base: a full major.minor.patch version tag, optionally followed by a digest.
PINNED_FROM_RE = re.compile(r"^[\w./-]+:\d+\.\d+\.\d+[\w.-]*(@sha256:[0-9a-f]{64})?$")
SECRET_NAME_RE = re.compile(r"PASSWORD|PASS$|SECRET|_KEY$|TOKEN|_AUTH$|_URL$|BACKEND$")
SECRET_FLAGS = ("--requirepass", "--masterauth", "--password", "--pass")
# uvicorn believing X-Forwarded-For from anyone lets a client choose its own address
TRUST_ANY_RE = re.compile(r"""forwarded-allow-ips["',\s=]+\*|FORWARDED_ALLOW_IPS["'\s=:]+\*""")


def service_problems(name: str, svc: dict[str, Any]) -> Iterator[str]:
    """The rules every service in the stack must follow."""
    health = svc.get("healthcheck") or {}
    if not health.get("test") or health.get("disable"):
        yield f"{name}: no healthcheck"
    if name != PUBLIC_SERVICE and svc.get("ports"):
        yield f"{name}: publishes ports; only {PUBLIC_SERVICE} may"
    if not svc.get("restart"):
        yield f"{name}: no restart policy"
    if not any("no-new-privileges" in opt for opt in svc.get("security_opt", [])):
        yield f"{name}: no security_opt no-new-privileges"
    for dep, spec in (svc.get("depends_on") or {}).items():
        if spec.get("condition") != "service_healthy":
            yield f"{name}: depends_on {dep} without condition service_healthy"
    if "ALL" not in (svc.get("cap_drop") or []):
        yield f"{name}: no cap_drop [ALL] (cap_add back only what it needs)"
    yield from secret_problems(name, svc)
    if (svc.get("environment") or {}).get("FORWARDED_ALLOW_IPS", "").strip() == "*":
        yield f"{name}: FORWARDED_ALLOW_IPS=* lets any client choose its address"


def secret_problems(name: str, svc: dict[str, Any]) -> Iterator[str]:
    """No password on a command line: `ps` and `docker inspect` show every argument."""
    env = svc.get("environment") or {}
    secrets = [
        str(value).rpartition("@")[0].rpartition(":")[2] if "://" in str(value) else str(value)
        for key, value in env.items()
        if SECRET_NAME_RE.search(key) and value
    ]
    health = (svc.get("healthcheck") or {}).get("test") or []
    for field, args in (("command", svc.get("command")), ("entrypoint", svc.get("entrypoint")),
                        ("healthcheck", health)):  # fmt: skip
        words = [args] if isinstance(args, str) else list(args or [])
        text = " ".join(str(word) for word in words)
        if any(flag in words or f"{flag} " in text for flag in SECRET_FLAGS):
            yield f"{name}: {field} passes a password flag; use a mounted file"
        elif any(len(secret) >= 8 and secret in text for secret in secrets):
            yield f"{name}: {field} contains a secret from its environment"


def stack_problems(config: dict[str, Any]) -> Iterator[str]:
    services: dict[str, dict[str, Any]] = config.get("services", {})
    for name, svc in sorted(services.items()):
        yield from service_problems(name, svc)
    proxy = services.get(PUBLIC_SERVICE)
    if proxy is None or len(proxy.get("ports", [])) != 1:
        yield f"{PUBLIC_SERVICE}: must exist and publish exactly one port"
    worker = services.get(SCALABLE_SERVICE, {})
    if not worker:
        yield f"{SCALABLE_SERVICE}: missing"
    if "container_name" in worker:
        yield f"{SCALABLE_SERVICE}: container_name prevents --scale"
    for volume in REQUIRED_VOLUMES:
        if volume not in config.get("volumes", {}):
            yield f"named volume {volume} missing"


def tls_problems(config: dict[str, Any]) -> Iterator[str]:
    """Served over HTTPS, the session cookie must be Secure."""
    services: dict[str, dict[str, Any]] = config.get("services", {})
    env = services.get("ml-client", {}).get("environment") or {}
    if str(env.get("ML_CLIENT_COOKIE_SECURE", "")).lower() != "true":
        yield "ml-client: HTTPS without ML_CLIENT_COOKIE_SECURE=true (a session cookie in clear)"
    volumes = services.get(PUBLIC_SERVICE, {}).get("volumes") or []
    if not any(str(v.get("source", "")).endswith("tls.conf") for v in volumes):
        yield f"{PUBLIC_SERVICE}: HTTPS without deploy/nginx/tls.conf"


def env_example_problems(compose_files: list[Path], example: Path) -> Iterator[str]:
    """Every ${VAR} used by a compose file is documented (set or commented) in .env.example."""
    documented = set(re.findall(r"^#?\s*([A-Z_][A-Z0-9_]*)=", example.read_text(), re.MULTILINE))
    for path in compose_files:
        for var in sorted(set(VAR_RE.findall(path.read_text())) - documented):
            yield f"{path}: ${{{var}}} is not documented in {example}"


def dockerfile_problems(path: Path) -> Iterator[str]:
    text = path.read_text()
    args = dict(re.findall(r"^ARG\s+(\w+)=(\S+)", text, re.MULTILINE))
    for image in re.findall(r"^FROM\s+(\S+)", text, re.MULTILINE):
        resolved = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), image)
        if not PINNED_FROM_RE.match(resolved):
            yield f"{path}: base image {resolved} is not pinned to a version tag"
    last_stage = text.rsplit("\nFROM ", 1)[-1]
    if "\nHEALTHCHECK " not in last_stage:
        yield f"{path}: final stage has no HEALTHCHECK"
    if TRUST_ANY_RE.search(text):
        yield f"{path}: uvicorn trusts X-Forwarded-For from any address (use FORWARDED_ALLOW_IPS)"
    users = re.findall(r"^USER\s+(\S+)", last_stage, re.MULTILINE)
    if not users or users[-1].split(":")[0] in ("root", "0"):
        yield f"{path}: final stage does not run as a non-root USER"


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in ("stack", "tls", "env-example", "dockerfiles"):
        sys.stderr.write(__doc__ or "")
        return 2
    command, paths = argv[0], [Path(p) for p in argv[1:]]
    if command == "stack":
        problems = list(stack_problems(json.loads(paths[0].read_text())))
    elif command == "tls":
        problems = list(tls_problems(json.loads(paths[0].read_text())))
    elif command == "env-example":
        problems = list(env_example_problems(paths, Path(".env.example")))
    else:
        problems = [p for path in paths for p in dockerfile_problems(path)]
    for problem in problems:
        sys.stderr.write(f"  {problem}\n")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
