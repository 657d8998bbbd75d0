"""Strict validators for rendered manifests: KubeRay CRD schemas and core Kubernetes schemas.

KubeRay's CRDs (v1.7.0, read from ``../shared/kuberay-crds/`` beside the repository) carry
OpenAPI v3 schemas that leave unknown fields to the API server's pruning, so a misspelled
field would be dropped silently on a cluster. Here every object schema that lists its
properties is closed (``additionalProperties: false``) and ``x-kubernetes-int-or-string`` becomes
"integer or string", so a misspelling fails validation. Core objects (CronJob, ServiceAccount,
Role, ...) go through ``kubernetes-validate``'s strict schemas.
"""

from __future__ import annotations

import functools
from pathlib import Path

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parent.parent
CRD_DIR = ROOT.parent / "shared" / "kuberay-crds"
CRD_FILES = {"RayCluster": "ray.io_rayclusters.yaml", "RayJob": "ray.io_rayjobs.yaml",
             "RayCronJob": "ray.io_raycronjobs.yaml"}
K8S_VERSION = "1.33"


def _close(node):
    if isinstance(node, list):
        return [_close(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _close(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    if node.get("x-kubernetes-int-or-string"):
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if "properties" in node and "additionalProperties" not in node \
            and not node.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


@functools.cache
def crd_schema(kind: str, version: str = "v1") -> dict:
    """The closed JSON schema of a KubeRay kind."""
    # The C loader: the CRDs are large (the pure-Python loader takes seconds each).
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    crd = yaml.load((CRD_DIR / CRD_FILES[kind]).read_text(), Loader=loader)
    for v in crd["spec"]["versions"]:
        if v["name"] == version:
            return _close(v["schema"]["openAPIV3Schema"])
    raise KeyError(f"{kind} has no version {version}")


@functools.cache
def _validator(kind: str, version: str) -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(crd_schema(kind, version))


def validate(obj: dict) -> None:
    """Raise ``jsonschema.ValidationError`` / ``kubernetes_validate.ValidationError`` if ``obj`` is invalid."""
    import kubernetes_validate

    group, _, version = obj["apiVersion"].rpartition("/")
    if group == "ray.io":
        error = jsonschema.exceptions.best_match(_validator(obj["kind"], version).iter_errors(obj))
        if error is not None:
            raise error
        # The CRD leaves metadata open; check it against the core ObjectMeta schema.
        meta = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": obj["metadata"]}
        kubernetes_validate.validate(meta, K8S_VERSION, strict=True)
    else:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
