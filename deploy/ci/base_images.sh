#!/usr/bin/env bash
# Build, with no registry, local stand-ins for the base images that docker-compose.yaml and the
# Dockerfiles name: Debian minbase root file systems made by mmdebstrap from the Debian archive
# apt uses, imported into podman. Used by scripts/compose_ci.sh; run as root.
#   localhost/mlprod-ci/python:3.11   bookworm python3.11 in a venv on PATH (python:3.11-slim)
#   localhost/mlprod-ci/node:bookworm nodejs + npm (node:20-slim, for `npm pack` only)
#   localhost/mlprod-ci/redis:bookworm redis-server, user redis (redis:7-alpine)
#   localhost/mlprod-ci/nginx:bookworm nginx + wget as uid 101 (nginxinc/nginx-unprivileged)
#   localhost/mlprod-ci/rabbitmq:trixie RabbitMQ 4.0, user rabbitmq (rabbitmq:4-alpine); it runs
#     RabbitMQ's own start script, which stops the node cleanly on SIGTERM, not Debian's
#     /usr/sbin wrapper, which as PID 1 ignores SIGTERM (the node is then killed, unflushed)
# Each is built only when missing. Usage: deploy/ci/base_images.sh [MIRROR]
set -euo pipefail

MIRROR=${1:-http://deb.debian.org/debian}
PREFIX=localhost/mlprod-ci
# The builds mount the machine's CA bundle here (scripts/compose_ci.sh): pip and npm trust it.
CA=/etc/ssl/certs/ca-certificates.crt
log_dir=$(mktemp -d)
trap 'rm -rf "$log_dir"' EXIT

have() { podman image exists "$PREFIX/$1"; }

# name suite "podman import --change" args... -- mmdebstrap args...
base() {
  local name=$1 suite=$2; shift 2
  local changes=()
  while [ "$1" != "--" ]; do changes+=(--change "$1"); shift; done
  shift
  have "$name" && return 0
  mmdebstrap --variant=minbase --quiet \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
    "$@" "$suite" - "$MIRROR" \
    | podman import "${changes[@]}" - "$PREFIX/$name" >/dev/null
  podman image exists "$PREFIX/$name"
}

python_image() {
  base python:3.11 bookworm \
    "ENV PATH=/opt/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    "ENV LANG=C.UTF-8" "CMD [\"python3\"]" -- \
    --include=python3,python3-venv,passwd,ca-certificates \
    --customize-hook='chroot "$1" python3 -m venv /opt/python' \
    --customize-hook="printf '[global]\ncert = $CA\n' > \"\$1/etc/pip.conf\""
}

node_image() {
  base node:bookworm bookworm "ENV NODE_EXTRA_CA_CERTS=$CA" "CMD [\"node\"]" -- \
    --include=nodejs,npm,ca-certificates
}

redis_image() {
  base redis:bookworm bookworm "USER redis" "WORKDIR /data" "CMD [\"redis-server\"]" -- \
    --include=redis-server \
    --customize-hook='mkdir -p "$1/data" && chroot "$1" chown redis:redis /data'
}

nginx_image() {
  base nginx:bookworm bookworm "USER 101" "CMD [\"nginx\", \"-g\", \"daemon off;\"]" -- \
    --include=nginx-light,wget \
    --customize-hook='chroot "$1" useradd --system --uid 101 --user-group --no-create-home nginx'
}

rabbitmq_image() {
  base rabbitmq:trixie trixie "USER rabbitmq" "ENV HOME=/var/lib/rabbitmq" \
    "ENV RABBITMQ_LOGS=-" "CMD [\"/usr/lib/rabbitmq/bin/rabbitmq-server\"]" -- \
    --include=rabbitmq-server \
    --customize-hook='mkdir -p "$1/etc/rabbitmq/conf.d"'
}

# All at once: each is mostly waiting on downloads and dpkg's fsyncs.
pids=()
for image in python node redis nginx rabbitmq; do
  "${image}_image" >"$log_dir/$image.log" 2>&1 &
  pids+=("$!:$image")
done
failed=0
for entry in "${pids[@]}"; do
  if ! wait "${entry%%:*}"; then
    tail -n 30 "$log_dir/${entry#*:}.log" >&2
    echo "base image ${entry#*:} failed" >&2
    failed=1
  fi
done
[ "$failed" = 0 ] || exit 1
podman images --filter "reference=$PREFIX/*" --format '{{.Repository}}:{{.Tag}} {{.Size}}'
