#!/usr/bin/env bash
# Build (and optionally push) the vlmbatch image; the tag carries the project version.
#
#   infra/docker/build.sh cuda|cpu [--push] [extra docker build args...]
#   VLMBATCH_REGISTRY=registry.example.com/ml infra/docker/build.sh cuda --push
#
# Tags: $VLMBATCH_REGISTRY/vlmbatch:<version>-<variant>, version from pyproject.toml.
# Override pins with build args, e.g. --build-arg VLLM_VERSION=0.29.0 --build-arg CUDA_VERSION=12.9.1.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
variant=${1:?usage: build.sh cuda|cpu [--push] [docker build args...]}
shift
push=0
if [ "${1:-}" = --push ]; then push=1; shift; fi
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$root/pyproject.toml" | head -n 1)
registry=${VLMBATCH_REGISTRY:-ghcr.io/vlmbatch}
case "$variant" in
  cuda) dockerfile="$root/infra/docker/Dockerfile" ;;
  cpu) dockerfile="$root/infra/docker/Dockerfile.cpu" ;;
  *) echo "unknown variant $variant (cuda or cpu)" >&2; exit 2 ;;
esac
tag="$registry/vlmbatch:$version-$variant"
docker build -f "$dockerfile" --build-arg "VLMBATCH_VERSION=$version" -t "$tag" "$@" "$root"
if [ "$push" = 1 ]; then docker push "$tag"; fi
echo "$tag"
