#!/usr/bin/env bash
# Quick-start command 1: installs dependencies, builds, and runs the whole
# pipeline on this machine: featurekv on 127.0.0.1:6380 with the demo
# registry (conf/features.yaml) and librdkafka's mock Kafka cluster inside it
# (`--kafka-brokers mock`), and featurekv-produce sending the clickstream to
# it at a modest rate. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-deps.sh
bash scripts/build.sh build
PORT=6380
# The mock cluster lives in the server and starts empty each time, so the
# demo keeps its snapshots in a fresh directory too (try SAVE, then look at
# it with build/tools/featurekv-snapshot $DATA/featurekv.snap).
DATA=$(mktemp -d /tmp/featurekv-demo-XXXXXX)
METRICS_PORT=9121
./build/server/featurekv-server conf/featurekv.conf --port $PORT --kafka-brokers mock --dir "$DATA" \
  --metrics-port $METRICS_PORT &
server=$!
producer=""
cleanup() {
  [[ -n $producer ]] && kill "$producer" 2>/dev/null || true
  kill "$server" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup INT TERM EXIT
for _ in $(seq 1 100); do redis-cli -p $PORT ping >/dev/null 2>&1 && break; sleep 0.1; done
redis-cli -p $PORT ping >/dev/null || { echo "featurekv did not start" >&2; exit 1; }
bootstrap=$(redis-cli -p $PORT info ingest | awk -F: '/^kafka_bootstrap:/ { sub(/\r/, ""); print $2 ":" $3 }')
# The clickstream: 200 users, 50 products, 200 events/s, into topic user_events.
./build/tools/featurekv-produce --brokers "$bootstrap" --topic user_events --rate 200 \
  --users 200 --products 50 2>/dev/null &
producer=$!
sleep 2
cat <<MSG

The demo pipeline is running: featurekv-produce -> Kafka (mock, $bootstrap)
-> featurekv on 127.0.0.1:$PORT. $(redis-cli -p $PORT dbsize) entities so far.
In another terminal, try:
  redis-cli -p $PORT FGET user:42
  redis-cli -p $PORT FGET user:42 clicks_5m last_action recent_products
  redis-cli -p $PORT FWINDOW product:7 views 5m BUCKETS 1m
  curl -s 127.0.0.1:$METRICS_PORT/metrics | grep featurekv_events_applied_total
  curl -s 127.0.0.1:$METRICS_PORT/readyz
  redis-cli -p $PORT FMGET user:1 user:2 user:3 FEATURES clicks_1h purchases_24h
  redis-cli -p $PORT INFO ingest
  redis-cli -p $PORT SAVE; build/tools/featurekv-snapshot $DATA/featurekv.snap
  kcat -b $bootstrap -C -t user_events -o -5 -e
Stop it with Ctrl-C.

MSG
wait "$server"
