#!/usr/bin/env bash
# Set up everything and run the demo captioning job:
#   install (from the lock) -> local S3 server -> tiny model -> demo corpus -> vlmbatch run.
# VLMBATCH_DEMO_FAMILY=llava runs it with the tiny LLaVA model instead of InternVL.
set -euo pipefail
source "$(dirname "$0")/env.sh"
family=${VLMBATCH_DEMO_FAMILY:-internvl}
export VLMBATCH_S3_ENDPOINT
VLMBATCH_S3_ENDPOINT=$(infra/local/s3.sh start)
echo "[demo] S3 server: $VLMBATCH_S3_ENDPOINT"
vlmbatch make-tiny-model "$family" "$VLMBATCH_HOME/models/tiny-$family"
vlmbatch demo-corpus s3://vlmbatch-demo/corpus/ --endpoint-url "$VLMBATCH_S3_ENDPOINT"
vlmbatch run jobs/specs/demo.yaml "$@"
echo "[demo] outputs: s3://vlmbatch-demo/captions/<run_id>/ on $VLMBATCH_S3_ENDPOINT (manifest.json lists the files)"
