#!/usr/bin/env bash
# Installs every build, test and benchmark dependency of featurekv from
# Debian 12's packages. Idempotent: skips apt entirely when all are present.
set -euo pipefail
PKGS=(
  build-essential cmake pkg-config git ca-certificates
  libboost-dev libboost-system-dev
  libxxhash-dev libjemalloc-dev libmimalloc-dev
  doctest-dev libbenchmark-dev libhiredis-dev libspdlog-dev libfmt-dev
  libyaml-cpp-dev libsimdjson-dev librdkafka-dev libssl-dev openssl
  redis-tools redis-server python3-redis kcat
  clang libclang-rt-14-dev
  prometheus
)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# prometheus gives promtool and the Prometheus server the metrics tests start
# on free ports (its packaged service is not used).
# Debian's redis-server package starts a system instance on 6379; featurekv's
# tests and benchmarks start their own on free ports, so leave it alone.
