#!/usr/bin/env bash
# Install vLLM (CUDA build), Ray and their pure-Python needs on a GPU machine with no network.
#
#   bash bench/gpu_env.sh PARTS_DIR      # PARTS_DIR holds w.tar.00, w.tar.01, ...: one tar of wheels, split
#   source bench/gpu_env.sh --activate   # later shells: PYTHONPATH for the installed set + this checkout
#
# For machines whose torch the vLLM wheel matches (vLLM 0.24.0 <-> torch 2.11.0+cu130): the wheels go
# into their own --target folder, with no dependency resolution, so the machine's torch, numpy and
# transformers are kept. Build the parts where pip reaches PyPI: `python bench/gpu_wheels.py PARTS_DIR`
# (vLLM 0.24.0, Ray 2.60.0 and what they need that the machine lacks, tarred and split into 60 MiB
# parts: the device tool carries 64 MiB a call). Carry the parts one per call into one folder there.
# vlmbatch's vLLM plugin (every model it ships) is registered through a hand-written dist-info: its entry point.
set -euo pipefail
SITE=${VLMBATCH_GPU_SITE:-/root/vlmbatch-site}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ ${1:-} != --activate ]]; then
  parts=${1:?usage: gpu_env.sh PARTS_DIR}
  rm -rf "$SITE" /root/vlmbatch-wheels && mkdir -p "$SITE" /root/vlmbatch-wheels
  cat "$parts"/w.tar.* | tar xf - -C /root/vlmbatch-wheels
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" /root/vlmbatch-wheels/*.whl
  info="$SITE/vlmbatch-0.1.0.dist-info"
  mkdir -p "$info"
  printf 'Metadata-Version: 2.1\nName: vlmbatch\nVersion: 0.1.0\n' >"$info/METADATA"
  printf '[vllm.general_plugins]\nvlmbatch = operators.vlm.plugins:register\n' >"$info/entry_points.txt"
fi
export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}" PATH="$SITE/bin:$PATH" RAY_USAGE_STATS_ENABLED=0
# FlashInfer (1 GB of kernels) is not carried: vLLM's own FlashAttention 3 serves Hopper, and greedy
# sampling needs no FlashInfer top-k/top-p kernel.
export VLLM_USE_FLASHINFER_SAMPLER=0
if [[ ${1:-} != --activate ]]; then
  python3 -c 'import torch, vllm, ray, transformers; print("torch", torch.__version__, "vllm", vllm.__version__, "ray", ray.__version__, "transformers", transformers.__version__, "cuda", torch.cuda.is_available())'
fi
