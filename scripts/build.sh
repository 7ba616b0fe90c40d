#!/usr/bin/env bash
# Configures and builds one build tree, warnings as errors (development and
# CI builds). usage: scripts/build.sh DIR [cmake args...]
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build}; shift || true
cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFKV_WERROR=ON "$@" >/dev/null
cmake --build "$dir" -j"$(nproc)"
