#!/usr/bin/env bash
# Quick-start command 1: installs dependencies, builds, and starts featurekv
# on 127.0.0.1:6380 with conf/featurekv.conf. (The Kafka mock and the event
# generator join the demo with the ingest issue.) Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-deps.sh
bash scripts/build.sh build
cat <<'MSG'

featurekv is starting on 127.0.0.1:6380. In another terminal, try:
  redis-cli -p 6380 PING
  redis-cli -p 6380 SET user:42:name alice EX 60
  redis-cli -p 6380 HSET user:42 clicks 3 last_action view
  redis-cli -p 6380 HGETALL user:42
  redis-cli -p 6380 INFO keyspace
Stop it with Ctrl-C (or redis-cli -p 6380 SHUTDOWN).

MSG
exec ./build/server/featurekv-server conf/featurekv.conf
