"""Cluster settings for ``vlmbatch render-k8s``: what the job spec does not say about Kubernetes.

The job spec says what to run (source, model, resources per engine); these settings say
where: image, namespace, identity, node shapes, schedule and the RayJob's lifecycle limits.
Every field has a description and a default that a platform engineer can apply unchanged.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class K8sConfig(BaseModel):
    """Kubernetes / KubeRay settings of a rendered deployment."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    image: str = Field(
        "ghcr.io/vlmbatch/vlmbatch:0.1.0-cuda",
        description="Container image with the project installed (infra/docker/; the tag carries the version).",
    )
    namespace: str = Field("vlmbatch", description="Namespace of every rendered object.")
    service_account: str = Field(
        "vlmbatch-job",
        description="ServiceAccount of the Ray pods; its annotations grant object-storage identity (no keys).",
    )
    service_account_annotations: dict[str, str] = Field(
        default_factory=lambda: {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/vlmbatch-s3"},
        description="Annotations binding the ServiceAccount to a cloud identity (EKS IRSA, GKE Workload Identity).",
    )
    run_id: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$",
        description="Fixed run id of the one-off RayJob, so a retry resumes it; None uses run.run_id or "
        "'<name>-k8s'.",
    )
    ray_version: str = Field("2.60.0", description="Ray version in the image (KubeRay's rayVersion).")
    head_cpu: str = Field("4", description="CPU request and limit of the head pod (it runs the driver).")
    head_memory: str = Field("16Gi", description="Memory request and limit of the head pod.")
    worker_cpu: str = Field("8", description="CPU request and limit of a GPU worker pod.")
    worker_memory: str = Field("64Gi", description="Memory request and limit of a GPU worker pod.")
    gpus_per_worker: int = Field(1, ge=1, description="GPUs of one worker pod (nvidia.com/gpu).")
    shm_size: str = Field("16Gi", description="Size of the in-memory /dev/shm of worker pods (vLLM, object store).")
    gpu_node_selector: dict[str, str] = Field(
        default_factory=dict, description="nodeSelector of GPU worker pods, e.g. a node pool label."
    )
    ttl_seconds_after_finished: int = Field(
        3600, ge=0, description="Seconds a finished RayJob (and its cluster) is kept for inspection."
    )
    active_deadline_seconds: int = Field(86400, ge=1, description="Seconds a RayJob may run before it is failed.")
    backoff_limit: int = Field(
        2, ge=0, description="Retries of a failed RayJob; each retry reuses the run id and resumes the run."
    )
    schedule: str = Field("0 2 * * *", description="Cron schedule of the nightly incremental run.")
    time_zone: str = Field("Etc/UTC", description="Time zone of the schedule.")
    scheduler_deadline_seconds: int = Field(
        90000, ge=60, description="Seconds the CronJob's pod waits for the RayJob it created before giving up."
    )
