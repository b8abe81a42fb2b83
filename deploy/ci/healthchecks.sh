#!/usr/bin/env bash
# Run the healthchecks of a compose project's containers, as Docker's daemon (or podman's
# systemd timers) would: podman without systemd never runs them by itself, and
# `depends_on: condition: service_healthy` waits on their results. A container not yet
# healthy is checked every few seconds, a healthy one about every 30 s (the workers' check
# starts a Python process, which costs CPU). Runs until killed. Usage: healthchecks.sh PROJECT
set -u
project=$1
declare -A last
while sleep 3; do
  now=$SECONDS
  while read -r id health; do
    [ -n "$id" ] || continue
    if [ "$health" = healthy ] && [ $((now - ${last[$id]:-0})) -lt 30 ]; then continue; fi
    last[$id]=$now
    podman healthcheck run "$id" >/dev/null 2>&1 &
  done < <(podman ps --filter "label=com.docker.compose.project=$project" \
             --format '{{.ID}} {{.Status}}' 2>/dev/null \
           | sed -E 's/^([0-9a-f]+) .*\((healthy|unhealthy|starting)\).*$/\1 \2/; t; s/ .*$/ none/')
  wait
done
