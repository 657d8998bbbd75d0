"""``vlmbatch render-k8s``: KubeRay and Kubernetes manifests generated from the job spec the CLI runs.

One spec file in, five manifest files out (``OUT_DIR``):

- ``base.yaml``: Namespace, the Ray pods' ServiceAccount (object-storage identity through its
  annotations, never keys) and a ConfigMap holding the spec file verbatim.
- ``raycluster.yaml``: a standing RayCluster (CPU head, GPU worker group) for ``ray job submit``.
- ``rayjob.yaml``: a one-off RayJob with a fixed run id, so each of its ``backoffLimit`` retries
  resumes the same run from its committed state.
- ``raycronjob.yaml``: the nightly run as a KubeRay RayCronJob (needs the RayCronJob feature gate).
- ``cronjob.yaml``: the same nightly run for clusters without that gate: a ``batch/v1`` CronJob
  with ``concurrencyPolicy: Forbid`` whose pod creates the night's RayJob and waits for it
  (``jobs.k8s_schedule``), so two nights never overlap; plus its ServiceAccount, Role, RoleBinding.

The spec file travels verbatim, so ``${VAR:-default}`` is expanded on the cluster; it is
also loaded and validated here, so a bad spec fails at render time.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from jobs.k8s_cluster import SPEC_FILE, SPEC_PATH, k8s_name, ray_cluster_spec, spec_configmap_name
from jobs.specfile import load_spec
from schemas.k8s import K8sConfig
from schemas.spec import JobSpec

TEMPLATE_MOUNT = "/etc/vlmbatch-schedule"
TEMPLATE_FILE = "rayjob.yaml"
# The night's run id is fixed for the whole night, so a retried RayJob of that night resumes
# it. KubeRay's submitter runs the entrypoint through a shell, which expands $(date).
NIGHTLY_RUN_ID = "{name}-nightly-$(date -u +%Y%m%d)"


def _labels(spec: JobSpec) -> dict:
    return {"app.kubernetes.io/name": "vlmbatch", "app.kubernetes.io/part-of": "vlmbatch",
            "vlmbatch/job": k8s_name(spec.name)}


def _meta(name: str, spec: JobSpec, cfg: K8sConfig, **extra) -> dict:
    return {"name": name, "namespace": cfg.namespace, "labels": _labels(spec), **extra}


def entrypoint(run_id: str) -> str:
    """The driver command a RayJob runs on the head: the same entrypoint as ``ray job submit``."""
    return f"python -m jobs.caption --spec {SPEC_PATH} --run-id {run_id}"


def rayjob_spec(spec: JobSpec, cfg: K8sConfig, run_id: str) -> dict:
    """The ``spec`` of a RayJob that runs ``run_id`` of ``spec`` on its own cluster."""
    return {
        "entrypoint": entrypoint(run_id),
        "submissionMode": "K8sJobMode",
        "shutdownAfterJobFinishes": True,
        "ttlSecondsAfterFinished": cfg.ttl_seconds_after_finished,
        "activeDeadlineSeconds": cfg.active_deadline_seconds,
        # Each retry brings up a new cluster and reruns the same run id: committed shards are kept.
        "backoffLimit": cfg.backoff_limit,
        "rayClusterSpec": ray_cluster_spec(spec, cfg),
    }


def base_objects(spec: JobSpec, cfg: K8sConfig, spec_text: str) -> list[dict]:
    """Namespace, the Ray pods' ServiceAccount and the spec ConfigMap."""
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": cfg.namespace, "labels": _labels(spec)}},
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": _meta(cfg.service_account, spec, cfg, annotations=dict(cfg.service_account_annotations))},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(spec_configmap_name(spec), spec, cfg),
         "data": {SPEC_FILE: spec_text}},
    ]


def raycluster(spec: JobSpec, cfg: K8sConfig) -> dict:
    """A standing RayCluster for ``ray job submit``."""
    meta = _meta(k8s_name(spec.name, "cluster"), spec, cfg)
    return {"apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": meta,
            "spec": ray_cluster_spec(spec, cfg)}


def rayjob(spec: JobSpec, cfg: K8sConfig, run_id: str) -> dict:
    """The one-off RayJob of run ``run_id``."""
    return {"apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": _meta(k8s_name(run_id), spec, cfg),
            "spec": rayjob_spec(spec, cfg, run_id)}


def nightly_rayjob_spec(spec: JobSpec, cfg: K8sConfig) -> dict:
    """The RayJob spec of one nightly run (used by both schedulers)."""
    return rayjob_spec(spec, cfg, NIGHTLY_RUN_ID.format(name=k8s_name(spec.name)))


def raycronjob(spec: JobSpec, cfg: K8sConfig) -> dict:
    """The nightly run as a KubeRay RayCronJob."""
    meta = _meta(k8s_name(spec.name, "nightly"), spec, cfg)
    return {"apiVersion": "ray.io/v1", "kind": "RayCronJob", "metadata": meta,
            "spec": {"schedule": cfg.schedule, "timeZone": cfg.time_zone,
                     "jobTemplate": nightly_rayjob_spec(spec, cfg)}}


def cron_objects(spec: JobSpec, cfg: K8sConfig) -> list[dict]:
    """The nightly run as a ``batch/v1`` CronJob that creates RayJobs, with the RBAC it needs."""
    name = k8s_name(spec.name, "scheduler")
    template_name = k8s_name(spec.name, "rayjob-template")
    template = {"apiVersion": "ray.io/v1", "kind": "RayJob",
                "metadata": {"labels": _labels(spec)}, "spec": nightly_rayjob_spec(spec, cfg)}
    container = {
        "name": "scheduler",
        "image": cfg.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["python", "-m", "jobs.k8s_schedule", "--template", f"{TEMPLATE_MOUNT}/{TEMPLATE_FILE}",
                    "--namespace", cfg.namespace, "--name-prefix", k8s_name(spec.name, "nightly"),
                    "--wait-seconds", str(cfg.scheduler_deadline_seconds)],
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "500m", "memory": "512Mi"}},
        "volumeMounts": [{"name": "template", "mountPath": TEMPLATE_MOUNT, "readOnly": True}],
    }
    cronjob = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": _meta(k8s_name(spec.name, "nightly-cron"), spec, cfg),
        "spec": {
            "schedule": cfg.schedule,
            "timeZone": cfg.time_zone,
            # The pod lives as long as the RayJob it created, so Forbid really keeps nights apart.
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": 3600,
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {
                "metadata": {"labels": _labels(spec)},
                "spec": {
                    # Retries belong to the RayJob (backoffLimit); a second scheduler pod would only
                    # wait on the same RayJob again.
                    "backoffLimit": 0,
                    "activeDeadlineSeconds": cfg.scheduler_deadline_seconds + 600,
                    "template": {
                        "metadata": {"labels": _labels(spec)},
                        "spec": {
                            "serviceAccountName": name,
                            "restartPolicy": "Never",
                            "containers": [container],
                            "volumes": [{"name": "template", "configMap": {"name": template_name}}],
                        },
                    },
                },
            },
        },
    }
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(name, spec, cfg)},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": _meta(name, spec, cfg),
         "rules": [{"apiGroups": ["ray.io"], "resources": ["rayjobs"], "verbs": ["create", "get", "list", "watch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": _meta(name, spec, cfg),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
         "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": cfg.namespace}]},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(template_name, spec, cfg),
         "data": {TEMPLATE_FILE: dump([template])}},
        cronjob,
    ]


def render(spec_path: str | Path, cfg: K8sConfig) -> dict[str, list[dict]]:
    """File name -> objects, for the spec file at ``spec_path``.

    Raises:
        jobs.specfile.SpecError: the spec does not load.
        ValueError: the spec cannot be placed on the configured workers.
    """
    spec_text = Path(spec_path).read_text()
    spec = load_spec(spec_path)
    run_id = cfg.run_id or spec.run.run_id or k8s_name(spec.name, "k8s")
    return {
        "base.yaml": base_objects(spec, cfg, spec_text),
        "raycluster.yaml": [raycluster(spec, cfg)],
        "rayjob.yaml": [rayjob(spec, cfg, run_id)],
        "raycronjob.yaml": [raycronjob(spec, cfg)],
        "cronjob.yaml": cron_objects(spec, cfg),
    }


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the embedded spec) as literal blocks, so the manifests read like the spec."""


def _str(dumper: yaml.SafeDumper, value: str):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump(objects: list[dict], header: str = "") -> str:
    """Objects as one multi-document YAML text."""
    docs = [yaml.dump(o, Dumper=_Dumper, sort_keys=False, width=1000) for o in objects]
    return header + "---\n".join(docs)


def write(files: dict[str, list[dict]], out_dir: str | Path, source: str) -> list[Path]:
    """Write rendered files under ``out_dir`` with a header naming the command that made them."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    header = (f"# Generated by `vlmbatch render-k8s {source}`: change the spec or the flags and re-render;\n"
              "# tests/unit/test_k8s_manifests.py fails when this file and the spec drift apart.\n")
    written = []
    for name, objects in files.items():
        path = out / name
        path.write_text(dump(objects, header))
        written.append(path)
    return written
