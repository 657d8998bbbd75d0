"""Arguments and body of ``vlmbatch render-k8s SPEC OUT_DIR``.

    vlmbatch render-k8s jobs/specs/cluster.yaml infra/k8s --image REGISTRY/vlmbatch:0.1.0-cuda

Flags left out keep :class:`schemas.k8s.K8sConfig`'s defaults, which are what the checked-in
``infra/k8s/`` was rendered with.
"""

from __future__ import annotations

import argparse
import sys

# flag -> K8sConfig field; flags default to None so only what a user gives overrides a default.
_SCALAR_FLAGS = {
    "--image": ("image", str),
    "--namespace": ("namespace", str),
    "--run-id": ("run_id", str),
    "--service-account": ("service_account", str),
    "--ray-version": ("ray_version", str),
    "--head-cpu": ("head_cpu", str),
    "--head-memory": ("head_memory", str),
    "--worker-cpu": ("worker_cpu", str),
    "--worker-memory": ("worker_memory", str),
    "--gpus-per-worker": ("gpus_per_worker", int),
    "--shm-size": ("shm_size", str),
    "--ttl-seconds-after-finished": ("ttl_seconds_after_finished", int),
    "--active-deadline-seconds": ("active_deadline_seconds", int),
    "--backoff-limit": ("backoff_limit", int),
    "--schedule": ("schedule", str),
    "--time-zone": ("time_zone", str),
}
_MAP_FLAGS = {"--sa-annotation": "service_account_annotations", "--gpu-node-selector": "gpu_node_selector"}


def add_render_k8s_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``render-k8s``; help texts come from the K8sConfig field descriptions."""
    from schemas.k8s import K8sConfig

    fields = K8sConfig.model_fields
    p.add_argument("spec", help="YAML job spec (the same file `vlmbatch run` and `jobs.caption` take)")
    p.add_argument("out_dir", help="directory to write the manifests to")
    for flag, (field, kind) in _SCALAR_FLAGS.items():
        p.add_argument(flag, type=kind, dest=field, help=fields[field].description)
    for flag, field in _MAP_FLAGS.items():
        p.add_argument(flag, dest=field, action="append", metavar="KEY=VALUE",
                       help=fields[field].description + " Repeatable; replaces the default.")


def config_from_args(args: argparse.Namespace):
    """A :class:`schemas.k8s.K8sConfig` from parsed flags.

    Raises:
        ValueError: a KEY=VALUE flag has no '='.
        pydantic.ValidationError: a value is out of range.
    """
    from schemas.k8s import K8sConfig

    values: dict = {}
    for field, _ in _SCALAR_FLAGS.values():
        if getattr(args, field, None) is not None:
            values[field] = getattr(args, field)
    for flag, field in _MAP_FLAGS.items():
        pairs = getattr(args, field, None)
        if pairs is None:
            continue
        mapping = {}
        for pair in pairs:
            key, sep, value = pair.partition("=")
            if not sep or not key:
                raise ValueError(f"{flag} takes KEY=VALUE, got {pair!r}")
            mapping[key] = value
        values[field] = mapping
    return K8sConfig(**values)


def render_k8s(args: argparse.Namespace) -> int:
    """Render and write; exit 0, or 2 with a message on a bad spec or flag."""
    from pydantic import ValidationError

    from jobs.k8s import render, write
    from jobs.specfile import SpecError

    try:
        cfg = config_from_args(args)
        files = render(args.spec, cfg)
    except (SpecError, ValueError, ValidationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path in write(files, args.out_dir, args.spec):
        print(path)
    return 0
