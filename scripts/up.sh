#!/usr/bin/env bash
# Runs the app on http://127.0.0.1:3000: starts Redis on 127.0.0.1:6379 if none answers there,
# then `spin up --build`. With --test-host, runs it under the project's test host instead, for a
# machine without the Spin CLI. Other arguments go to `spin up` (or the test host).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  redis-server --bind 127.0.0.1 --port 6379 --save '' --appendonly no --daemonize yes >/dev/null
fi

if [ "${1:-}" = "--test-host" ]; then
  shift
  exec cargo run --release -p spin-test-host -- --build --listen 127.0.0.1:3000 "$@"
fi
exec spin up --build "$@"
