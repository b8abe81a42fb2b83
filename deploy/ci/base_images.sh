#!/usr/bin/env bash
# Build, with no registry, local stand-ins for the base images that docker-compose.yaml and the
# Dockerfiles name: Debian minbase root file systems made by mmdebstrap from the Debian archive
# apt uses, imported into the engine whose CLI COMPOSE_CI_ENGINE_CLI names (`podman`, the
# default, or Debian's `/usr/bin/docker` with DOCKER_HOST set for Docker Engine). Used by
# scripts/compose_ci.sh; run as root.
#   localhost/mlprod-ci/python:3.11   bookworm python3.11 in a venv on PATH (python:3.11-slim)
#   localhost/mlprod-ci/node:bookworm nodejs + npm (node:20-slim, for `npm pack` only)
#   localhost/mlprod-ci/redis:bookworm redis-server, user redis (redis:7-alpine)
#   localhost/mlprod-ci/nginx:bookworm nginx + wget as uid 101 (nginxinc/nginx-unprivileged)
#   (these four are one bookworm root file system, each with its own user and command)
#   localhost/mlprod-ci/rabbitmq:trixie RabbitMQ 4.0, user rabbitmq (rabbitmq:4-alpine); it runs
#     RabbitMQ's own start script, which stops the node cleanly on SIGTERM, not Debian's
#     /usr/sbin wrapper, which as PID 1 ignores SIGTERM (the node is then killed, unflushed)
# Each is built only when missing. The bookworm ones carry this machine's CA bundle (a
# TLS-inspecting proxy's CA, where there is one) at the same path, so that pip and npm reach
# their registries in any engine's build, with no mount. Usage: deploy/ci/base_images.sh [MIRROR]
set -euo pipefail

MIRROR=${1:-http://deb.debian.org/debian}
PREFIX=localhost/mlprod-ci
read -r -a ENGINE <<<"${COMPOSE_CI_ENGINE_CLI:-podman}"
CA=/etc/ssl/certs/ca-certificates.crt
log_dir=$(mktemp -d)
trap 'rm -rf "$log_dir"' EXIT

have() { "${ENGINE[@]}" image inspect "$PREFIX/$1" >/dev/null 2>&1; }

# One bookworm root file system serves as the python, node, redis and nginx bases (imported
# once for each, with its own user and command): one mmdebstrap instead of four.
bookworm_images() {
  local missing=0 name
  for name in python:3.11 node:bookworm redis:bookworm nginx:bookworm; do
    have "$name" || missing=1
  done
  [ "$missing" = 1 ] || return 0
  mmdebstrap --variant=minbase --quiet "${DPKG_OPTS[@]}" \
    --include=python3,python3-venv,passwd,ca-certificates,nodejs,npm,redis-server,nginx-light,wget \
    --customize-hook='chroot "$1" python3 -m venv /opt/python' \
    --customize-hook="cp $CA \"\$1$CA\"" \
    --customize-hook="printf '[global]\ncert = $CA\n' > \"\$1/etc/pip.conf\"" \
    --customize-hook='mkdir -p "$1/data" && chroot "$1" chown redis:redis /data' \
    --customize-hook='chroot "$1" useradd --system --uid 101 --user-group --no-create-home nginx' \
    bookworm "$log_dir/bookworm.tar" "$MIRROR"
  local path="ENV PATH=/opt/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
  "${ENGINE[@]}" import --change "$path" --change "ENV LANG=C.UTF-8" --change 'CMD ["python3"]' \
    "$log_dir/bookworm.tar" "$PREFIX/python:3.11" >/dev/null
  "${ENGINE[@]}" import --change "ENV NODE_EXTRA_CA_CERTS=$CA" --change 'CMD ["node"]' \
    "$log_dir/bookworm.tar" "$PREFIX/node:bookworm" >/dev/null
  "${ENGINE[@]}" import --change "USER redis" --change "WORKDIR /data" --change 'CMD ["redis-server"]' \
    "$log_dir/bookworm.tar" "$PREFIX/redis:bookworm" >/dev/null
  "${ENGINE[@]}" import --change "USER 101" --change 'CMD ["nginx", "-g", "daemon off;"]' \
    "$log_dir/bookworm.tar" "$PREFIX/nginx:bookworm" >/dev/null
  rm -f "$log_dir/bookworm.tar"
}

rabbitmq_image() {
  have rabbitmq:trixie && return 0
  mmdebstrap --variant=minbase --quiet "${DPKG_OPTS[@]}" --include=rabbitmq-server \
    --customize-hook='mkdir -p "$1/etc/rabbitmq/conf.d"' trixie - "$MIRROR" \
    | "${ENGINE[@]}" import --change "USER rabbitmq" --change "ENV HOME=/var/lib/rabbitmq" \
        --change "ENV RABBITMQ_LOGS=-" \
        --change 'CMD ["/usr/lib/rabbitmq/bin/rabbitmq-server"]' - "$PREFIX/rabbitmq:trixie" \
        >/dev/null
  have rabbitmq:trixie
}

DPKG_OPTS=(--dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*'
           --dpkgopt='path-exclude=/usr/share/locale/*'
           --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*')
bookworm_images >"$log_dir/bookworm.log" 2>&1 &
bookworm=$!
rabbitmq_image >"$log_dir/rabbitmq.log" 2>&1 &
rabbitmq=$!
failed=0
wait "$bookworm" || { tail -n 30 "$log_dir/bookworm.log" >&2; echo "bookworm bases failed" >&2; failed=1; }
wait "$rabbitmq" || { tail -n 30 "$log_dir/rabbitmq.log" >&2; echo "rabbitmq base failed" >&2; failed=1; }
[ "$failed" = 0 ] || exit 1
"${ENGINE[@]}" images --filter "reference=$PREFIX/*" --format '{{.Repository}}:{{.Tag}} {{.Size}}'
