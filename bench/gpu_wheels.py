"""Build the wheel parts that ``bench/gpu_env.sh`` installs on a GPU machine with no network.

    python bench/gpu_wheels.py OUT_DIR [--have-file FILE]

Run where pip reaches PyPI. Downloads vLLM 0.24.0 (the CUDA build matching torch 2.11.0+cu130),
Ray 2.60.0, vlmbatch's own runtime needs and, transitively, every requirement the GPU image lacks
(``--have-file``: one distribution name per line, default the device image's list below), for
CPython 3.12 on manylinux x86_64. Then tars the wheels and splits the tar into 60 MiB parts
``OUT_DIR/w.tar.NN`` (the device tool carries 64 MiB a call, with the checkout).

Left out on purpose, learnt on the H100 (2026-11-23):
- FlashInfer and its cubins (~1 GB), tilelang, CUTLASS DSL, quack, humming kernels: vLLM 0.24 runs on
  Hopper with its own FlashAttention 3; ``gpu_env.sh`` sets ``VLLM_USE_FLASHINFER_SAMPLER=0`` so the
  sampler does not import FlashInfer.
- FlashAttention 2's kernels and the ``vllm-rs`` binary inside the vLLM wheel (81 + 12 MB
  compressed): FA2 is an optional import there, and Hopper uses FA3.
Pinned against the latest versions pip would pick: ``apache-tvm-ffi>=0.1.11`` (xgrammar 0.2.8
imports it, vLLM's pin of 0.1.9 is for FlashInfer), ``pycountry`` (transformers' Mistral tokenizer
backend, imported while building an InternVL processor).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

ROOTS = ["vllm==0.24.0", "ray==2.60.0", "pydantic", "s3fs", "pyyaml", "pycountry", "apache-tvm-ffi>=0.1.11,<0.2"]
SKIP = {"torch", "torchaudio", "torchvision", "triton", "numba", "flashinfer-python", "flashinfer-cubin",
        "nvidia-cutlass-dsl", "humming-kernels", "tilelang", "tokenspeed-mla", "quack-kernels", "fastsafetensors",
        "nvidia-cudnn-frontend", "uvicorn", "fastapi-cli", "fastapi-cloud-cli", "email-validator",
        "python-multipart", "opencv-python-headless", "setuptools", "pywin32", "win32-setctime", "contextvars",
        "aiocontextvars"}
# What the device image already holds (its KINDS.md list, 2026-11-17), so not downloaded.
DEVICE_HAS = """absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs certifi
charset-normalizer click cloudpickle colorama cycler einops filelock frozenlist fsspec grpcio h11 hf-xet httpcore
httpx huggingface-hub idna jinja2 markupsafe msgpack multidict networkx ninja numpy packaging pandas pillow
prometheus-client propcache protobuf psutil py-cpuinfo pyarrow pygments python-dateutil pyyaml regex requests rich
safetensors sentencepiece six sympy tiktoken tokenizers tqdm transformers typer typing-extensions urllib3 uvloop
wrapt yarl zipp""".split()
PLATFORMS = ["manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_24_x86_64", "manylinux_2_27_x86_64",
             "manylinux_2_28_x86_64", "manylinux_2_31_x86_64", "manylinux_2_34_x86_64", "manylinux_2_35_x86_64",
             "manylinux_2_5_x86_64", "manylinux1_x86_64", "linux_x86_64", "any"]
DROP_FROM_VLLM = ["vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so", "vllm/vllm-rs"]


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def download(root: list[str], have: set[str], dest: Path) -> None:
    """Download ``root`` and their requirements, transitively, skipping what the machine has."""
    platform_args = [a for p in PLATFORMS for a in ("--platform", p)]
    queue, done = list(root), set()
    pinned = {norm(re.split(r"[<>=!~ ]", r)[0]) for r in root}
    while queue:
        req = re.sub(r"\s*;.*", "", queue.pop()).replace(" ", "")
        req = re.sub(r"\[.*?\]", "", req)
        name = norm(re.split(r"[<>=!~]", req)[0])
        if name in done or name in SKIP or (name in have and name not in {"vllm", "ray"}):
            continue
        if name in pinned and req not in root:
            continue  # a root pin wins over what a dependency asks
        done.add(name)
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                        "--python-version", "3.12", "--implementation", "cp", *platform_args, "-d", str(dest), req],
                       check=True)
        for wheel in dest.glob("*.whl"):
            if norm(wheel.name.split("-")[0]) != name:
                continue
            with zipfile.ZipFile(wheel) as z:
                meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
                for line in z.read(meta).decode().splitlines():
                    if line.startswith("Requires-Dist:") and "extra ==" not in line \
                            and 'python_version < "3.1' not in line and "win32" not in line \
                            and "Windows" not in line:
                        queue.append(line.split(":", 1)[1].strip())


def strip_vllm(dest: Path) -> None:
    for wheel in dest.glob("vllm-*.whl"):
        subprocess.run(["zip", "-q", "-d", str(wheel), *DROP_FROM_VLLM], check=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--have-file", type=Path, help="distribution names the GPU machine already has")
    args = ap.parse_args()
    have = set(map(norm, args.have_file.read_text().split() if args.have_file else DEVICE_HAS))
    with tempfile.TemporaryDirectory() as tmp:
        wheels = Path(tmp) / "wheels"
        wheels.mkdir()
        download(ROOTS, have, wheels)
        strip_vllm(wheels)
        tar = Path(tmp) / "w.tar"
        with tarfile.open(tar, "w") as t:
            for wheel in sorted(wheels.glob("*.whl")):
                t.add(wheel, arcname=wheel.name)
        if args.out.exists():
            shutil.rmtree(args.out)
        args.out.mkdir(parents=True)
        subprocess.run(["split", "-b", "60m", "-d", str(tar), str(args.out / "w.tar.")], check=True)
    parts = sorted(args.out.glob("w.tar.*"))
    print(f"{len(parts)} parts in {args.out}: carry one per call, then `bash bench/gpu_env.sh DIR_WITH_PARTS`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
