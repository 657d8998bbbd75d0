#!/usr/bin/env bash
# A ShareGPT4V-style dataset build on the local S3 server, end to end:
#   install (from the lock) -> S3 server -> tiny InternVL + LLaVA -> demo corpus + LLaVA manifest
#   -> vlmbatch run jobs/specs/sharegpt4v.yaml -> exports (ShareGPT4V JSON, HF datasets Parquet).
# Outputs: s3://vlmbatch-demo/datasets/<run_id>/ and ./sharegpt4v-export/<run_id>/.
set -euo pipefail
source "$(dirname "$0")/env.sh"
export VLMBATCH_S3_ENDPOINT
VLMBATCH_S3_ENDPOINT=$(infra/local/s3.sh start)
echo "[sharegpt4v] S3 server: $VLMBATCH_S3_ENDPOINT"
for family in internvl llava; do
  vlmbatch make-tiny-model "$family" "$VLMBATCH_HOME/models/tiny-$family"
done
vlmbatch demo-corpus s3://vlmbatch-demo/corpus/ --endpoint-url "$VLMBATCH_S3_ENDPOINT"
vlmbatch demo-manifest s3://vlmbatch-demo/sharegpt4v/manifest.json --endpoint-url "$VLMBATCH_S3_ENDPOINT"
run_id=sharegpt4v-$(date -u +%Y%m%dT%H%M%SZ)
vlmbatch run jobs/specs/sharegpt4v.yaml --run-id "$run_id"
out=sharegpt4v-export/$run_id
vlmbatch export "s3://vlmbatch-demo/datasets/$run_id" "$out/sharegpt4v.json" --format sharegpt4v \
  --image-root s3://vlmbatch-demo/corpus/ --endpoint-url "$VLMBATCH_S3_ENDPOINT"
vlmbatch export "s3://vlmbatch-demo/datasets/$run_id" "$out/hf" --format hf-parquet \
  --image-root s3://vlmbatch-demo/corpus/ --endpoint-url "$VLMBATCH_S3_ENDPOINT"
echo "[sharegpt4v] load with: datasets.load_dataset('parquet', data_files='$out/hf/data/*.parquet', split='train')"
