#!/usr/bin/env bash
# The Docker engine this project's set-up starts when none answers (root on Debian only), and
# the restart that fault tests inject. Only an engine this script started is ever restarted:
# it knows its own from the pid file.
#
#   scripts/dockerd.sh start     start dockerd unless an engine answers; record its pid
#   scripts/dockerd.sh restart   SIGTERM the engine this script started, then start it again
#   scripts/dockerd.sh owned     exit 0 when the running engine is the one this script started
set -euo pipefail
cd "$(dirname "$0")/.."

# Machine-wide, like the engine itself: any checkout of the project knows the engine it started.
STATE_DIR="${BIGEYE_DOCKERD_STATE_DIR:-/run/bigeye-agent-orchestrator}"
PID_FILE="$STATE_DIR/dockerd.pid"
LOG_FILE="/var/log/bigeye-dockerd.log"
say() { echo "dockerd: $*"; }
die() { echo "dockerd: $*" >&2; exit 1; }

answers() { docker info >/dev/null 2>&1; }

owned_pid() {
  [[ -f "$PID_FILE" ]] || return 1
  local pid
  pid="$(cat "$PID_FILE")"
  [[ -n "$pid" && -d "/proc/$pid" ]] || return 1
  [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "dockerd" ]] || return 1
  echo "$pid"
}

wait_until() {  # wait_until SECONDS COMMAND...: poll a condition, never a fixed sleep
  local deadline=$((SECONDS + $1)); shift
  until "$@"; do
    (( SECONDS < deadline )) || return 1
    sleep 0.2
  done
}

start() {
  answers && return 0
  [[ "$(id -u)" == 0 ]] || die "no Docker engine answers and this is not root: start Docker yourself"
  command -v dockerd >/dev/null || die "dockerd is not installed"
  mkdir -p "$STATE_DIR"
  local stale
  stale="$(cat /var/run/docker.pid 2>/dev/null || true)"
  if [[ -n "$stale" && ! -d "/proc/$stale" ]]; then
    rm -f /var/run/docker.pid  # left by an engine that died: it would refuse to start
  fi
  say "starting dockerd (log: $LOG_FILE)"
  nohup dockerd >>"$LOG_FILE" 2>&1 &
  echo $! >"$PID_FILE"
  wait_until 60 answers || die "dockerd did not answer within 60 s; see $LOG_FILE"
}

gone() { ! [[ -d "/proc/$1" ]]; }

restart() {
  local pid
  pid="$(owned_pid)" || die "the running Docker engine was not started by this project's set-up ($PID_FILE): it is not restarted"
  say "restarting dockerd (pid $pid)"
  kill -TERM "$pid"
  wait_until 120 gone "$pid" || die "dockerd (pid $pid) did not exit within 120 s"
  start
}

case "${1:-}" in
  start) start ;;
  restart) restart ;;
  owned) owned_pid >/dev/null ;;
  *) die "usage: $0 start|restart|owned" ;;
esac
