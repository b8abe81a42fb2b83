#!/usr/bin/env bash
# Run the Kubernetes manifests for real under `podman kube play` and test them from outside
# (tests/k8s, marker `k8s`): deploy/ci/k8s (overlays/dev with the CI images) is rendered with
# `kubectl kustomize`, deploy/ci/k8s_podman.py turns the API, the YOLOX-Nano worker, Redis and
# RabbitMQ into pods (and the Secrets into podman secrets), podman plays them on a network of
# their own, and a test uploads a photo through the API pod and gets its boxes.
# Needs the images scripts/compose_ci.sh builds (mlprod/*:ci and the localhost/mlprod-ci/
# stand-ins): compose_ci.sh runs this script after its own tests, while they exist; alone, run
# `COMPOSE_CI_KEEP=1 scripts/compose_ci.sh` first. Everything it creates is removed by name on
# exit, failure included. Run as root. Usage: scripts/k8s_ci.sh
set -euo pipefail
cd "$(dirname "$0")/.."

ROOT=$PWD
WORK=${K8S_CI_WORK:-/tmp/mlprod-k8s-ci}
PORT=${K8S_CI_PORT:-18100}
NETWORK=mlprod-k8s-ci
PODS=(redis rabbitmq ml-api ml-celery-yolox-nano)
PY=$ROOT/.venv/bin/python
export CONTAINERS_CONF=${CONTAINERS_CONF:-$ROOT/deploy/ci/containers.conf}
# the YOLOX-Nano file no registry ships: compose_ci.sh's `make model`, or the shared folder
MODELS=${K8S_CI_MODEL_DIR:-$ROOT/ml-storages/models/yolox-nano}
[ -f "$MODELS/yolox_nano.onnx" ] || MODELS=${ML_SHARED_MODELS_DIR:-$ROOT/../shared/models}/yolox-nano

started=$SECONDS
current=setup
step() {
  current=$1
  printf '\n=== k8s CI: %s (at %ds)\n' "$current" $((SECONDS - started))
}
cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  if [ "$rc" -ne 0 ]; then
    printf '\n=== k8s CI FAILED in step "%s" (exit %d); pods and last log lines:\n' "$current" "$rc"
    podman pod ps 2>/dev/null
    for pod in "${PODS[@]}"; do
      for c in $(podman pod inspect "$pod" --format '{{range .Containers}}{{.Name}} {{end}}' 2>/dev/null); do
        case $c in *-infra) continue ;; esac
        printf -- '--- %s\n' "$c"; podman logs --tail 30 "$c" 2>&1
      done
    done
  fi
  printf '\n=== k8s CI: cleanup\n'
  for pod in "${PODS[@]}"; do podman pod rm -f -t 10 "$pod" >/dev/null 2>&1; done
  for f in "$WORK"/play/secrets/*.json; do
    [ -e "$f" ] && podman secret rm "$(basename "$f" .json)" >/dev/null 2>&1
  done
  # the claims', ConfigMaps' and emptyDirs' volumes podman made (k8s_podman.py lists them)
  [ -f "$WORK/play/volumes.txt" ] && while read -r v; do
    podman volume rm -f "$v" >/dev/null 2>&1
  done <"$WORK/play/volumes.txt"
  podman network rm -f "$NETWORK" >/dev/null 2>&1
  rm -rf "$WORK"
  printf 'k8s CI: %s after %ds\n' "$([ "$rc" -eq 0 ] && echo passed || echo FAILED)" \
    $((SECONDS - started))
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "images (built by scripts/compose_ci.sh)"
for image in mlprod/ml-api:ci mlprod/ml-celery:ci mlprod-ci/redis:bookworm mlprod-ci/rabbitmq:trixie; do
  podman image exists "localhost/$image" || { echo "no image localhost/$image: run COMPOSE_CI_KEEP=1 scripts/compose_ci.sh"; exit 1; }
done
[ -f "$MODELS/yolox_nano.onnx" ] || { echo "no yolox_nano.onnx in $MODELS"; exit 1; }

step "render deploy/ci/k8s (overlays/dev) with kubectl kustomize; secrets by make-secrets.sh"
rm -rf "$WORK" && mkdir -p "$WORK/deploy/ci" && chmod 700 "$WORK"
cp -r deploy/k8s "$WORK/deploy/" && cp -r deploy/ci/k8s "$WORK/deploy/ci/"
rm -rf "$WORK/deploy/k8s/overlays/dev/secrets"
sh "$WORK/deploy/k8s/overlays/dev/make-secrets.sh" >/dev/null
kubectl kustomize "$WORK/deploy/ci/k8s" >"$WORK/rendered.yaml"
"$PY" deploy/ci/k8s_podman.py "$WORK/rendered.yaml" "$WORK/play" --only "$(IFS=,; echo "${PODS[*]}")" \
  --publish "ml-api:8000:$PORT" --host-path "/mlprod-k8s-ci/models/yolox-nano=$MODELS"

step "podman kube play"
for f in "$WORK"/play/secrets/*.json; do
  podman secret rm "$(basename "$f" .json)" >/dev/null 2>&1 || true  # a run killed before its cleanup
  podman secret create "$(basename "$f" .json)" "$f" >/dev/null
done
podman network rm -f "$NETWORK" >/dev/null 2>&1 || true
podman network create "$NETWORK" >/dev/null
# podman without systemd logs that it cannot add the probes' timers: they are not run here
podman kube play --network "$NETWORK" "$WORK/play/play.yaml" 2>&1 \
  | grep -v -e 'systemd' -e 'syslog' || true
for pod in "${PODS[@]}"; do podman pod exists "$pod" || { echo "no pod $pod"; exit 1; }; done
podman ps --format '{{.Names}} {{.Status}}' | grep -E "^($(IFS='|'; echo "${PODS[*]}"))-"

step "an API key (docs/deploy.md: kubectl exec deploy/ml-api -- mlprod api-key create)"
for _ in $(seq 1 60); do
  curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
  sleep 2
done
api_key=$(podman exec ml-api-ml-api mlprod api-key create k8s-ci | tail -n 1)

step "tests through the API pod (tests/k8s)"
K8S_CI_URL="http://127.0.0.1:$PORT" K8S_CI_API_KEY="$api_key" K8S_CI_PODS="${PODS[*]}" \
  "$PY" -m pytest -m k8s tests/k8s -p no:cacheprovider -v
