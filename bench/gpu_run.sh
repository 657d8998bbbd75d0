#!/usr/bin/env bash
# The GPU truth run of issue 19, prepared on a CPU machine and NOT YET RUN: one short script a session
# with an H100/H200 sends through the device tool, one STEP per call (each well under the tool's 10
# minutes; all of them about 13 minutes of device time after the install).
#
#   bash bench/gpu_run.sh PARTS_DIR install      # once: bench/gpu_env.sh with the wheel parts (~90 s)
#   bash bench/gpu_run.sh PARTS_DIR xc2-vl       # XComposer2-VL-7B: pipeline vs bare (the 1.2M build's model)
#   bash bench/gpu_run.sh PARTS_DIR plora        # Partial LoRA's decode step vs no LoRA, CUDA graphs, bf16
#   bash bench/gpu_run.sh PARTS_DIR internvl     # InternVL2-8B: pipeline vs bare, vs ray.data.llm
#   bash bench/gpu_run.sh PARTS_DIR xc2-4khd     # XComposer2-4KHD-7B: pipeline vs bare
#   bash bench/gpu_run.sh PARTS_DIR share        # Share-Captioner's shape, if bench/shapes.py has it (issue 16)
#   bash bench/gpu_run.sh PARTS_DIR table        # README tables, projection from the measured rates
#
# Every step writes JSON under $OUT (default bench/results/gpu: the device tool brings $OUT back, so pass
# OUT=$OUT there and copy the files into bench/results/gpu/ here). Shapes are full size with dummy weights
# (bench/shapes.py, vLLM load_format dummy, bf16), 230 generated tokens per image (the ShareGPT4V-PT
# captions' length), one run per side (device time), sides alternating as everywhere in bench/.
# Roofline beside each figure: bench/table.py's GPU table (bench/bound.py). Images: bench.common's corpus.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PARTS=${1:?usage: gpu_run.sh PARTS_DIR STEP}
STEP=${2:?usage: gpu_run.sh PARTS_DIR STEP}
OUT=${OUT:-bench/results/gpu}
mkdir -p "$OUT"
if [[ $STEP == install ]]; then
  bash bench/gpu_env.sh "$PARTS"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/device.txt"
  exit 0
fi
# shellcheck source=/dev/null
source bench/gpu_env.sh --activate
COMMON=(--load-format dummy --dtype bfloat16 --gpus-per-engine 1 --num-cpus 16 --max-tokens 230
        --max-num-seqs 256 --batch-size 64 --runs 1 --results-dir "$OUT")
run() { timeout 540 python -m bench.run "$@"; }
case $STEP in
  xc2-vl)   # 1546-token prompts; 512 images = two waves of 256, so the steady window is more than one wave
    run overhead --family xcomposer2-vl --model-id shape:xcomposer2-vl-7b --max-model-len 2048 --num-images 512 \
        "${COMMON[@]}" ;;
  plora)    # module-level, one process: 2 layers at 7B dimensions, batch 1 / 64 / 256, replayed CUDA graphs
    run plora --runs 5 --results-dir "$OUT" \
        --extra '{"plora_device": "cuda", "plora_batches": [1, 64, 256], "plora_steps": 50}' ;;
  internvl)
    run overhead vs_ray_llm --family internvl --model-id shape:internvl2-8b --max-model-len 2048 \
        --num-images 1024 "${COMMON[@]}" ;;
  xc2-4khd) # ~3100-token prompts at hd_num 25 for the corpus's 448 x 597 photographs
    run overhead --family xcomposer2-4khd --model-id shape:xcomposer2-4khd-7b --max-model-len 4096 \
        --num-images 256 "${COMMON[@]}" ;;
  share)
    if python -c 'import sys; from bench.shapes import SHAPES; sys.exit("share-captioner-7b" not in SHAPES)'; then
      run overhead --family share-captioner --model-id shape:share-captioner-7b --max-model-len 1024 \
          --num-images 1024 "${COMMON[@]}"
    else
      echo "bench/shapes.py has no share-captioner-7b shape yet (issue 16): skipped"
    fi ;;
  table)
    python -m bench.table --write && python -m bench.projection --write ;;
  *) echo "unknown step $STEP" >&2; exit 2 ;;
esac
# Result files are named <bench>-<date>.json by bench.run; give them the device and shape, as bench/table.py's
# GPU table expects (results/gpu/<name>-<device>-<shape>-<date>.json).
python - "$OUT" <<'EOF'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
for path in out.glob("*-2*.json"):
    body = json.loads(path.read_text())
    if body.get("name") and path.stem.count("-") == 1:
        gpu = (body["machine"].get("gpu") or "gpu").split()[1].lower()
        shape = (body.get("params", {}).get("model_id") or "plora").removeprefix("shape:").replace("-", "_")
        path.rename(out / f"{body['name']}-{gpu}-{shape}-{path.stem.split('-')[1]}.json")
EOF
