"""The RayCluster spec of a job: a CPU head that runs the driver, one GPU worker group for the engines.

Sizes come from the job spec (engines, GPUs per engine, tensor parallelism) and the
cluster settings (:class:`schemas.k8s.K8sConfig`), so a spec change moves the manifests.
"""

from __future__ import annotations

import math
import re

from schemas.k8s import K8sConfig
from schemas.spec import JobSpec

SPEC_MOUNT = "/etc/vlmbatch"
SPEC_FILE = "job.yaml"
SPEC_PATH = f"{SPEC_MOUNT}/{SPEC_FILE}"
METRICS_PORT = 8080
DASHBOARD_PORT = 8265


def k8s_name(name: str, suffix: str = "") -> str:
    """A DNS-1123 name from a job name: lowercase, '-' for anything else, at most 63 characters."""
    base = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-") or "vlmbatch"
    suffix = f"-{suffix}" if suffix else ""
    return base[: 63 - len(suffix)].rstrip("-") + suffix


def spec_configmap_name(spec: JobSpec) -> str:
    """Name of the ConfigMap that carries the job spec file to the head pod."""
    return k8s_name(spec.name, "spec")


def worker_replicas(spec: JobSpec, cfg: K8sConfig) -> int:
    """GPU worker pods needed for the spec's engine pool (at least one)."""
    r = spec.resources
    gpus_per_engine = max(r.gpus_per_engine, 1) * spec.model.engine.tensor_parallel_size
    if gpus_per_engine > cfg.gpus_per_worker:
        raise ValueError(
            f"one engine needs {gpus_per_engine} GPUs but a worker has {cfg.gpus_per_worker} "
            "(raise --gpus-per-worker)"
        )
    engines_per_worker = cfg.gpus_per_worker // gpus_per_engine
    return max(1, math.ceil(r.num_engines / engines_per_worker))


def _resources(cpu: str, memory: str, gpus: int = 0) -> dict:
    limits: dict = {"cpu": cpu, "memory": memory}
    if gpus:
        limits["nvidia.com/gpu"] = gpus
    return {"requests": dict(limits), "limits": limits}


def _head_template(spec: JobSpec, cfg: K8sConfig) -> dict:
    container = {
        "name": "ray-head",
        "image": cfg.image,
        "imagePullPolicy": "IfNotPresent",
        "ports": [
            {"containerPort": 6379, "name": "gcs"},
            {"containerPort": DASHBOARD_PORT, "name": "dashboard"},
            {"containerPort": 10001, "name": "client"},
            {"containerPort": METRICS_PORT, "name": "metrics"},
        ],
        "resources": _resources(cfg.head_cpu, cfg.head_memory),
        # The driver runs here; it reads the spec file from the ConfigMap.
        "volumeMounts": [{"name": "job-spec", "mountPath": SPEC_MOUNT, "readOnly": True}],
    }
    return {
        "metadata": {"labels": {"app.kubernetes.io/name": "vlmbatch", "vlmbatch/job": k8s_name(spec.name)}},
        "spec": {
            "serviceAccountName": cfg.service_account,
            "containers": [container],
            "volumes": [{"name": "job-spec", "configMap": {"name": spec_configmap_name(spec)}}],
        },
    }


def _worker_template(spec: JobSpec, cfg: K8sConfig) -> dict:
    container = {
        "name": "ray-worker",
        "image": cfg.image,
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"containerPort": METRICS_PORT, "name": "metrics"}],
        "resources": _resources(cfg.worker_cpu, cfg.worker_memory, cfg.gpus_per_worker),
        # vLLM and Ray's object store use shared memory; the container default (64 MiB) is too small.
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
    }
    pod: dict = {
        "serviceAccountName": cfg.service_account,
        "containers": [container],
        "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": cfg.shm_size}}],
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    }
    if cfg.gpu_node_selector:
        pod["nodeSelector"] = dict(cfg.gpu_node_selector)
    return {
        "metadata": {"labels": {"app.kubernetes.io/name": "vlmbatch", "vlmbatch/job": k8s_name(spec.name)}},
        "spec": pod,
    }


def ray_cluster_spec(spec: JobSpec, cfg: K8sConfig) -> dict:
    """The ``spec`` of a RayCluster (also the ``rayClusterSpec`` of a RayJob) for ``spec``."""
    replicas = worker_replicas(spec, cfg)
    return {
        "rayVersion": cfg.ray_version,
        # Ray 2.60 clusters authenticate with a token: KubeRay generates it into a Secret and hands
        # it to every pod and to the job submitter (a client outside needs it too, see infra/README.md).
        "authOptions": {"mode": "token"},
        "headGroupSpec": {
            # num-cpus 0: no task or actor lands on the head, which runs the driver and the GCS.
            "rayStartParams": {"dashboard-host": "0.0.0.0", "num-cpus": "0",
                               "metrics-export-port": str(METRICS_PORT)},
            "template": _head_template(spec, cfg),
        },
        "workerGroupSpecs": [
            {
                "groupName": "gpu",
                "replicas": replicas,
                "minReplicas": replicas,
                "maxReplicas": replicas,
                "rayStartParams": {"metrics-export-port": str(METRICS_PORT)},
                "template": _worker_template(spec, cfg),
            }
        ],
    }
