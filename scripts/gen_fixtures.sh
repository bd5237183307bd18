#!/usr/bin/env bash
# Regenerates the shipped fixtures with the kktcert binary itself.
# tests/fixtures.rs checks that the committed files equal what this produces.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
bin=target/release/kktcert
$bin gen --k 4 --d 20 --sigma 0.5 --n 40 --n-test 200 --seed 0 --means orthogonal --out fixtures/tiny
$bin gen --k 6 --d 100 --sigma 1 --n 60 --n-test 500 --seed 0 --means orthogonal --out fixtures/small
$bin gen --k 10 --d 400 --sigma 1 --n 100 --n-test 1000 --seed 0 --means orthogonal --out fixtures/std
