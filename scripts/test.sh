#!/usr/bin/env bash
# The test command: the whole suite in release mode (the numerics are slow in debug).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --release "$@"
