#!/usr/bin/env bash
# A local Kafka-protocol broker (tansu, SQLite storage) on loopback, for development
# and the integration tests.
#
#   scripts/broker.sh start [PORT]   start in the background (default 9092)
#   scripts/broker.sh stop  [PORT]
#   scripts/broker.sh status [PORT]
#
# Data lives in $TRIAGE_BROKER_DIR (default .triage/broker-PORT) and survives restarts.
set -euo pipefail
cd "$(dirname "$0")/.."

cmd="${1:-status}"
port="${2:-9092}"
dir="${TRIAGE_BROKER_DIR:-.triage/broker-$port}"
pidfile="$dir/tansu.pid"

running() { [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

case "$cmd" in
  start)
    if running; then echo "broker: already running on 127.0.0.1:$port (pid $(cat "$pidfile"))"; exit 0; fi
    bin=$(bash scripts/install-tansu.sh)
    mkdir -p "$dir"
    # SQLite path is relative to the broker's working directory (see environment.md).
    (cd "$dir" && exec "$bin" broker \
        --listener-url "tcp://127.0.0.1:$port" \
        --advertised-listener-url "tcp://127.0.0.1:$port" \
        --storage-engine "sqlite://tansu.db" >tansu.log 2>&1) &
    echo $! > "$pidfile"
    for _ in $(seq 50); do
      if (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "broker: listening on 127.0.0.1:$port (pid $(cat "$pidfile"), data in $dir)"
        exit 0
      fi
      sleep 0.2
    done
    echo "broker: did not start; see $dir/tansu.log" >&2
    exit 1
    ;;
  stop)
    if running; then kill "$(cat "$pidfile")"; rm -f "$pidfile"; echo "broker: stopped"; else echo "broker: not running"; fi
    ;;
  status)
    if running; then echo "broker: running on 127.0.0.1:$port (pid $(cat "$pidfile"))"; else echo "broker: not running"; exit 1; fi
    ;;
  *) echo "usage: scripts/broker.sh start|stop|status [PORT]" >&2; exit 2 ;;
esac
