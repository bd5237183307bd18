#!/usr/bin/env bash
# Runs every benchmark of docs/BENCHMARKS.md in turn and keeps each one's
# output in OUT (default /tmp/kktcert-bench). The Python peers need a venv
# with numpy scipy safetensors pyscipopt cvxpy clarabel.
#   bash scripts/bench_all.sh [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-/tmp/kktcert-bench}"
mkdir -p "$out"
cargo build --release --quiet
k=target/release/kktcert
py="${PYTHON:-python3}"
run() { local name=$1; shift; echo "== $name: $*"; "$@" 2>&1 | tee "$out/$name.txt"; }

run train        "$py" scripts/bench_train.py
run kkt          "$py" scripts/bench_kkt.py
run kkt_large    "$py" scripts/bench_kkt_large.py
run polish       bash scripts/bench_polish.sh "$out/polish"
run distance_200 "$py" scripts/bench_distance.py --wide --widths 200 --obbt --scip-time-limit 1200
run distance_400 "$py" scripts/bench_distance.py --wide --widths 400 --obbt --scip-time-limit 300
run distance_1000 "$py" scripts/bench_distance.py --mnist --points 5 --scip-time-limit 120
run soak         env KKTCERT_QC_TESTS=5000 KKTCERT_DEGENERATE_TESTS=20000 cargo test --release --test distance
run quick        /usr/bin/time -f "%e s, %M KB peak" $k --quiet reproduce --quick --out "$out/quick"
run full         /usr/bin/time -f "%e s, %M KB peak" $k --quiet reproduce --out "$out/full"
run hypotheses   /usr/bin/time -f "%e s, %M KB peak" $k --quiet reproduce --regime hypotheses --out "$out/hypotheses"
