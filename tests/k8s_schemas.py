"""Strict validators for rendered manifests: KubeRay CRD schemas and core Kubernetes schemas.

The OpenAPI v3 schemas of KubeRay v1.7.0's CRDs (RayCluster, RayJob, RayCronJob, version
``ray.io/v1``) travel with the repository under ``tests/data/kuberay-v1.7.0/`` (extracted
unchanged from the release's CRD files; origin in that folder's README). KubeRay leaves unknown
fields to the API server's pruning, so a misspelled field would be dropped silently on a
cluster. Here every object schema that lists its properties is closed
(``additionalProperties: false``) and ``x-kubernetes-int-or-string`` becomes "integer or
string", so a misspelling fails validation. Core objects (CronJob, ServiceAccount, Role, ...)
go through ``kubernetes-validate``'s strict schemas.

To carry another KubeRay release: ``python -m tests.k8s_schemas CRD_DIR [VERSION]`` (the
folder of its ``ray.io_*.yaml`` files), then point :data:`SCHEMA_DIR` at the new folder.
"""

from __future__ import annotations

import functools
import gzip
import json
import sys
from pathlib import Path

import jsonschema

KUBERAY_VERSION = "v1.7.0"
SCHEMA_DIR = Path(__file__).resolve().parent / "data" / f"kuberay-{KUBERAY_VERSION}"
CRD_FILES = {"RayCluster": "ray.io_rayclusters.yaml", "RayJob": "ray.io_rayjobs.yaml",
             "RayCronJob": "ray.io_raycronjobs.yaml"}
K8S_VERSION = "1.33"


def schema_file(kind: str, version: str = "v1") -> Path:
    """Where the carried OpenAPI v3 schema of ``kind`` at API ``version`` lives."""
    return SCHEMA_DIR / f"{kind.lower()}.{version}.schema.json.gz"


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
    path = schema_file(kind, version)
    if not path.exists():
        raise KeyError(f"{kind} {version}: no carried schema at {path}")
    return _close(json.loads(gzip.decompress(path.read_bytes())))


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


def extract(crd_dir: Path, out_dir: Path, versions: tuple[str, ...] = ("v1",)) -> list[Path]:
    """Write each CRD's ``openAPIV3Schema`` of ``versions`` from ``crd_dir`` into ``out_dir`` (gzipped JSON).

    The schema is copied unchanged; gzip runs with a zero mtime so the same CRDs give the same bytes.
    """
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the CRDs are large
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for kind, name in CRD_FILES.items():
        crd = yaml.load((crd_dir / name).read_text(), Loader=loader)
        for v in (v for v in crd["spec"]["versions"] if v["name"] in versions):
            blob = json.dumps(v["schema"]["openAPIV3Schema"], sort_keys=True, separators=(",", ":")).encode()
            path = out_dir / f"{kind.lower()}.{v['name']}.schema.json.gz"
            path.write_bytes(gzip.compress(blob, compresslevel=9, mtime=0))
            written.append(path)
    return written


if __name__ == "__main__":
    crds = Path(sys.argv[1])
    target = SCHEMA_DIR.parent / f"kuberay-{sys.argv[2]}" if len(sys.argv) > 2 else SCHEMA_DIR
    for p in extract(crds, target):
        print(p)
