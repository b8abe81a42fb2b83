"""Turn rendered Kubernetes manifests into what `podman kube play` (podman 4.3) runs.

podman plays Pods, Deployments, PersistentVolumeClaims and ConfigMaps, and takes Secrets from
its own secret store. So, for scripts/k8s_ci.sh:
  - each chosen Deployment or StatefulSet becomes a Pod with its pod template, named after the
    workload: podman's DNS then answers that name, as the workload's Service does on a cluster
    (every Service here is named after its workload; k8s_manifests.py checks the selectors);
  - a StatefulSet's volumeClaimTemplates become PersistentVolumeClaims (podman volumes);
  - each Secret is written as the JSON map of its data, for `podman secret create`;
  - no container port is declared but the --publish'ed ones (podman would publish each on the
    host's every address);
  - the pod's restartPolicy is OnFailure (podman 4.3 restarts an init container that exited
    under Always);
  - the objects podman cannot run are left out: Services, NetworkPolicies, the budgets and
    autoscalers, KEDA's and the Prometheus operator's objects, the Ingress, the Namespace.
Nothing else changes: images, commands, env, probes, securityContext and volumes are the
rendered ones.

Usage: k8s_podman.py RENDERED.yaml OUT_DIR --only NAME,... [--publish NAME:PORT:HOSTPORT]
       [--host-path OLD=NEW] [--prefix PREFIX]
Writes OUT_DIR/play.yaml and OUT_DIR/secrets/NAME.json; prints what it left out.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

PLAYED = ("ConfigMap", "PersistentVolumeClaim")
WORKLOADS = ("Deployment", "StatefulSet")
Doc = dict[str, Any]


def as_pod(doc: Doc, prefix: str) -> tuple[Doc, list[Doc]]:
    """The workload's pod template as a Pod of the workload's name, and its claims."""
    template = doc["spec"]["template"]
    spec = dict(template["spec"])
    # podman 4.3 gives an init container the pod's restart policy: under Always it runs again
    # and again and the pod never starts. OnFailure still restarts a container that fails.
    spec["restartPolicy"] = "OnFailure"
    # podman publishes a declared port on the host (0.0.0.0): only --publish'ed ones stay
    spec["containers"] = [{**c, "ports": []} for c in spec["containers"]]
    claims = []
    for claim in doc["spec"].get("volumeClaimTemplates") or []:
        name = f"{prefix}{claim['metadata']['name']}-{doc['metadata']['name']}"
        claims.append(
            {
                **claim,
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": name},
            }
        )
        volume = {"name": claim["metadata"]["name"], "persistentVolumeClaim": {"claimName": name}}
        spec["volumes"] = [*(spec.get("volumes") or []), volume]
    for volume in spec.get("volumes") or []:
        if "persistentVolumeClaim" in volume and not volume["persistentVolumeClaim"][
            "claimName"
        ].startswith(prefix):
            volume["persistentVolumeClaim"]["claimName"] = (
                prefix + volume["persistentVolumeClaim"]["claimName"]
            )
    metadata = {"name": doc["metadata"]["name"], "labels": template["metadata"].get("labels")}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}, claims


def publish(pod: Doc, container_port: int, host_port: int) -> None:
    port = {"containerPort": container_port, "hostPort": host_port, "hostIP": "127.0.0.1"}
    pod["spec"]["containers"][0]["ports"] = [port]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rendered", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--only", required=True, help="the workloads to run, comma-separated")
    parser.add_argument("--publish", action="append", default=[], help="NAME:PORT:HOSTPORT")
    parser.add_argument("--host-path", action="append", default=[], help="OLD=NEW")
    parser.add_argument("--prefix", default="mlprod-k8s-ci-", help="for volume names")
    args = parser.parse_args(argv)
    only = set(args.only.split(","))
    docs = [d for d in yaml.safe_load_all(args.rendered.read_text()) if d]
    played: list[Doc] = []
    left_out: list[str] = []
    (args.out / "secrets").mkdir(parents=True, exist_ok=True)
    for doc in docs:
        kind, name = doc["kind"], doc["metadata"]["name"]
        if kind == "Secret":
            (args.out / "secrets" / f"{name}.json").write_text(json.dumps(doc.get("data") or {}))
        elif kind == "PersistentVolumeClaim":
            played.append({**doc, "metadata": {"name": args.prefix + name}})
        elif kind in PLAYED:
            played.append(doc)
        elif kind in WORKLOADS and name in only:
            pod, claims = as_pod(doc, args.prefix)
            played += [*claims, pod]
        else:
            left_out.append(f"{kind}/{name}")
    text = yaml.safe_dump_all(played, sort_keys=False)
    for mapping in args.host_path:
        old, _, new = mapping.partition("=")
        text = text.replace(f"path: {old}\n", f"path: {new}\n")
    pods = {d["metadata"]["name"]: d for d in yaml.safe_load_all(text) if d["kind"] == "Pod"}
    missing = only - set(pods)
    if missing:
        sys.exit(f"no workload named {', '.join(sorted(missing))}")
    for item in args.publish:
        name, port, host_port = item.split(":")
        publish(pods[name], int(port), int(host_port))
    played = [
        pods.get(d["metadata"]["name"], d) if d["kind"] == "Pod" else d
        for d in yaml.safe_load_all(text)
    ]
    (args.out / "play.yaml").write_text(yaml.safe_dump_all(played, sort_keys=False))
    # the named volumes podman makes for them (claims, ConfigMaps, emptyDirs), for the clean-up
    names = {
        v.get("persistentVolumeClaim", {}).get("claimName")
        or v.get("configMap", {}).get("name")
        or v["name"]
        for pod in pods.values()
        for v in pod["spec"].get("volumes") or []
        if "hostPath" not in v
    }
    (args.out / "volumes.txt").write_text("".join(f"{n}\n" for n in sorted(names)))
    print(f"played: {', '.join(sorted(pods))}; left out: {', '.join(left_out)}")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
