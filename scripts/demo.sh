#!/usr/bin/env bash
# Quick-start command 1: installs dependencies, builds, starts featurekv on
# 127.0.0.1:6380 with conf/featurekv.conf (demo registry conf/features.yaml)
# and feeds it a few thousand clickstream events through FEVENT. (The Kafka
# mock and the live event generator join the demo with the ingest issue.)
# Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-deps.sh
bash scripts/build.sh build
PORT=6380
./build/server/featurekv-server conf/featurekv.conf --port $PORT &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null' INT TERM EXIT
for _ in $(seq 1 100); do redis-cli -p $PORT ping >/dev/null 2>&1 && break; sleep 0.1; done
redis-cli -p $PORT ping >/dev/null || { echo "featurekv did not start" >&2; exit 1; }
# 3000 clickstream events: users 1..200, products 1..50, last 10 minutes.
now=$(date +%s)
awk -v now="$now" 'BEGIN { srand(42); split("click view view click add_to_cart purchase", act, " ");
  for (b = 0; b < 30; b++) { printf "FEVENT user_events";
    for (e = 0; e < 100; e++)
      printf " \047{\"user_id\":%d,\"product_id\":%d,\"action\":\"%s\",\"timestamp\":%.0f}\047",
        1 + int(rand() * 200), 1 + int(rand() * 50), act[1 + int(rand() * 6)], now - int(rand() * 600);
    printf "\n" } }' | redis-cli -p $PORT >/dev/null
cat <<MSG

featurekv is running on 127.0.0.1:$PORT with the demo registry and $(redis-cli -p $PORT dbsize) entities.
In another terminal, try:
  redis-cli -p $PORT FGET user:42
  redis-cli -p $PORT FGET user:42 clicks_5m last_action recent_products
  redis-cli -p $PORT FWINDOW product:7 views 5m BUCKETS 1m
  redis-cli -p $PORT FMGET user:1 user:2 user:3 FEATURES clicks_1h purchases_24h
  redis-cli -p $PORT FEVENT user_events '{"user_id":42,"product_id":7,"action":"purchase","timestamp":$now}'
  redis-cli -p $PORT INFO ingest
Stop it with Ctrl-C (or redis-cli -p $PORT SHUTDOWN).

MSG
wait $server
