# Sourced by the demo and test scripts: the project's environment, local S3 identity, paths.
# Installs on first use (infra/local/install.sh), then only re-links this checkout.
_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export VLMBATCH_HOME=${VLMBATCH_HOME:-$HOME/.cache/vlmbatch}
VLMBATCH_VENV=$("$_root/infra/local/install.sh" | tail -n 1)
export VLMBATCH_VENV
export PATH="$VLMBATCH_VENV/bin:$PATH"
# This checkout's code first, for the driver and every Ray worker it starts, even when the shared
# environment's editable install was last linked to another checkout.
export PYTHONPATH="$_root${PYTHONPATH:+:$PYTHONPATH}"
# Loopback-only development identity of the local S3 server; real deployments use their
# own credential chain and never these values.
export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-vlmbatch-dev}
export AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-vlmbatch-dev-secret}
export AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-us-east-1}
export RAY_USAGE_STATS_ENABLED=0
cd "$_root"
