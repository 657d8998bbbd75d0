"""The KubeRay / Kubernetes manifests: rendered from the job spec, strictly valid, never drifting."""

from __future__ import annotations

import copy
import shlex
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from jobs.cli import main as cli_main
from jobs.k8s import dump, render
from jobs.k8s_cluster import SPEC_PATH
from jobs.specfile import load_spec
from schemas.k8s import K8sConfig
from tests.k8s_schemas import CRD_FILES, KUBERAY_VERSION, crd_schema, schema_file, validate

ROOT = Path(__file__).resolve().parents[2]
SPEC = "jobs/specs/cluster.yaml"
K8S_DIR = ROOT / "infra" / "k8s"


def _objects(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _checked_in() -> dict[str, list[dict]]:
    return {p.name: _objects(p) for p in sorted(K8S_DIR.glob("*.yaml"))}


def _by_kind(files: dict[str, list[dict]]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for objects in files.values():
        for o in objects:
            out.setdefault(o["kind"], []).append(o)
    return out


def test_crd_schemas_travel_with_the_repository():
    """The strict check needs nothing beside the checkout: the schemas are inside it, with their release."""
    for kind in CRD_FILES:
        path = schema_file(kind)
        assert path.is_relative_to(ROOT) and path.exists(), path
        schema = crd_schema(kind)
        assert set(schema["properties"]) >= {"apiVersion", "kind", "metadata", "spec"}
        assert schema["additionalProperties"] is False
    assert KUBERAY_VERSION in (schema_file("RayJob").parent / "README.md").read_text()


def test_checked_in_manifests_equal_a_fresh_render(tmp_path, monkeypatch):
    """A spec change that is not re-rendered fails here: infra/k8s/ is exactly what the CLI writes."""
    monkeypatch.chdir(ROOT)
    assert cli_main(["render-k8s", SPEC, str(tmp_path)]) == 0
    fresh = {p.name: p.read_text() for p in sorted(tmp_path.glob("*.yaml"))}
    assert fresh == {p.name: p.read_text() for p in sorted(K8S_DIR.glob("*.yaml"))}, (
        f"infra/k8s/ drifted from {SPEC}: run `vlmbatch render-k8s {SPEC} infra/k8s`")


def test_every_checked_in_object_is_valid():
    files = _checked_in()
    kinds = _by_kind(files)
    assert sorted(kinds) == ["ConfigMap", "CronJob", "Namespace", "RayCluster", "RayCronJob", "RayJob", "Role",
                             "RoleBinding", "ServiceAccount"]
    for objects in files.values():
        for obj in objects:
            validate(obj)
    # The RayJob the CronJob's pod creates is checked too.
    template = next(c for c in kinds["ConfigMap"] if "rayjob.yaml" in c["data"])
    validate({**yaml.safe_load(template["data"]["rayjob.yaml"]), "metadata": {"name": "nightly-x", "namespace": "n"}})


@pytest.mark.parametrize(
    ("kind", "path", "typo"),
    [
        ("RayJob", ["spec"], "shutdownAfterJobFinish"),
        ("RayJob", ["spec", "rayClusterSpec", "headGroupSpec"], "rayStartParam"),
        ("RayCluster", ["spec", "workerGroupSpecs", 0, "template", "spec", "containers", 0], "volumeMount"),
        ("RayCronJob", ["spec"], "schedul"),
        ("RayCronJob", [], "specs"),
        ("CronJob", ["spec"], "concurrencyPolcy"),
        ("Role", ["rules", 0], "verb"),
    ],
)
def test_a_misspelled_field_fails(kind, path, typo):
    obj = copy.deepcopy(_by_kind(_checked_in())[kind][0])
    validate(obj)
    node = obj
    for key in path:
        node = node[key]
    node[typo] = copy.deepcopy(next(iter(node.values())))
    with pytest.raises((jsonschema.ValidationError, kubernetes_validate.ValidationError), match=typo):
        validate(obj)


def test_a_wrong_type_fails():
    obj = copy.deepcopy(_by_kind(_checked_in())["RayJob"][0])
    obj["spec"]["backoffLimit"] = "two"
    with pytest.raises(jsonschema.ValidationError):
        validate(obj)


def test_rayjob_lifecycle_and_resume():
    kinds = _by_kind(_checked_in())
    job = kinds["RayJob"][0]["spec"]
    assert job["shutdownAfterJobFinishes"] is True
    assert job["ttlSecondsAfterFinished"] > 0 and job["activeDeadlineSeconds"] > 0 and job["backoffLimit"] >= 1
    argv = shlex.split(job["entrypoint"])
    assert argv[:3] == ["python", "-m", "jobs.caption"]
    # A fixed run id: every retry of the RayJob resumes the same run.
    assert argv[argv.index("--spec") + 1] == SPEC_PATH and argv[argv.index("--run-id") + 1] == "nightly-caption-k8s"
    for spec in (job, kinds["RayCronJob"][0]["spec"]["jobTemplate"]):
        head = spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
        assert head["volumes"][0]["configMap"]["name"] == "nightly-caption-spec"
        assert head["containers"][0]["volumeMounts"][0]["mountPath"] + "/job.yaml" == SPEC_PATH
    # Object-storage identity from the ServiceAccount, never keys.
    sa = next(s for s in kinds["ServiceAccount"] if s["metadata"]["name"] == "vlmbatch-job")
    assert "eks.amazonaws.com/role-arn" in sa["metadata"]["annotations"]
    text = "".join(p.read_text() for p in K8S_DIR.glob("*.yaml")).lower()
    assert "aws_secret_access_key" not in text and "aws_access_key_id" not in text


def test_schedules_never_overlap():
    kinds = _by_kind(_checked_in())
    cron = kinds["CronJob"][0]["spec"]
    assert cron["concurrencyPolicy"] == "Forbid" and cron["schedule"] == kinds["RayCronJob"][0]["spec"]["schedule"]
    pod = cron["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["containers"][0]["command"][:3] == ["python", "-m", "jobs.k8s_schedule"]
    role = next(r for r in kinds["Role"] if r["metadata"]["name"] == pod["serviceAccountName"])
    assert {"create", "get"} <= set(role["rules"][0]["verbs"]) and role["rules"][0]["resources"] == ["rayjobs"]


def test_spec_configmap_carries_the_spec_file_verbatim(tmp_path):
    cm = next(c for c in _by_kind(_checked_in())["ConfigMap"] if "job.yaml" in c["data"])
    assert cm["data"]["job.yaml"] == (ROOT / SPEC).read_text()
    (tmp_path / "job.yaml").write_text(cm["data"]["job.yaml"])
    assert load_spec(tmp_path / "job.yaml").name == "nightly-caption"


def test_the_spec_sizes_the_cluster(tmp_path):
    """Engines and GPUs per engine in the spec decide the GPU worker group; render flags the rest."""
    text = (ROOT / SPEC).read_text().replace("num_engines: 4", "num_engines: 6")
    (tmp_path / "s.yaml").write_text(text)
    files = render(tmp_path / "s.yaml", K8sConfig(gpus_per_worker=2, image="reg.example/vlmbatch:9", namespace="ml"))
    cluster = files["raycluster.yaml"][0]
    group = cluster["spec"]["workerGroupSpecs"][0]
    assert group["replicas"] == group["maxReplicas"] == 3  # 6 engines, 2 per 2-GPU worker
    assert group["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert cluster["metadata"]["namespace"] == "ml"
    assert "reg.example/vlmbatch:9" in dump(files["rayjob.yaml"])
    for objects in files.values():
        for obj in objects:
            validate(obj)


def test_bad_spec_or_flag_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text((ROOT / SPEC).read_text().replace("num_engines", "num_engine"))
    assert cli_main(["render-k8s", str(tmp_path / "bad.yaml"), str(tmp_path / "out")]) == 2
    assert "num_engine" in capsys.readouterr().err
    assert cli_main(["render-k8s", SPEC, str(tmp_path / "out"), "--sa-annotation", "novalue"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
