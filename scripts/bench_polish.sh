#!/usr/bin/env bash
# Polish and large-d benchmarks of docs/BENCHMARKS.md ("Polish" table).
# Prints wall time and peak memory per step; repeat and take medians.
#   bash scripts/bench_polish.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
k=target/release/kktcert
out="${1:-/tmp/kktcert-bench-polish}"
mkdir -p "$out"
t() { /usr/bin/time -f "  %e s, %M KB peak" "$@"; }

echo "std, GD width 100: near and sparse polish"
$k --quiet train --data fixtures/std/train.safetensors --width 100 --out "$out/std100.safetensors" >/dev/null
for mode in near sparse; do
  echo " $mode"
  t $k --quiet polish --net "$out/std100.safetensors" --data fixtures/std/train.safetensors \
    --test fixtures/std/test.safetensors --out "$out/std100-$mode.safetensors" --mode $mode \
    --stop-when-certified --time-limit 600 | tail -n 2
done

echo "std, GD width 100 from smaller initialisations (seeds 0-4): near polish"
for init in 0.01 0.03; do
  for seed in 0 1 2 3 4; do
    net="$out/std100-i$init-s$seed.safetensors"
    $k --quiet train --data fixtures/std/train.safetensors --width 100 --init-scale $init --seed $seed --out "$net" >/dev/null
    echo " --init-scale $init --seed $seed"
    t $k --quiet polish --net "$net" --data fixtures/std/train.safetensors \
      --test fixtures/std/test.safetensors --out "${net%.safetensors}-near.safetensors" --stop-when-certified | tail -n 2
  done
done

echo "k=4, d=100,000, n=40, width 40: gen + train + polish + certify"
t $k --quiet gen --k 4 --d 100000 --sigma 1 --n 40 --n-test 200 --means orthogonal --seed 3 --out "$out/big"
t $k --quiet train --data "$out/big/train.safetensors" --width 40 --init-scale 0.5 --out "$out/big40.safetensors"
t $k --quiet polish --net "$out/big40.safetensors" --data "$out/big/train.safetensors" --out "$out/big40p.safetensors" --stop-when-certified | tail -n 2
t $k --quiet certify --net "$out/big40p.safetensors" --data "$out/big/train.safetensors" --act-tol 1e-4

echo "k=32, d=400, n=320, GD width 320: near polish (wide nets)"
$k --quiet gen --k 32 --d 400 --sigma 1 --n 320 --n-test 200 --means orthogonal --seed 0 --out "$out/k32" >/dev/null
$k --quiet train --data "$out/k32/train.safetensors" --width 320 --init-scale 0.5 --out "$out/k32w320.safetensors" >/dev/null
t $k --quiet polish --net "$out/k32w320.safetensors" --data "$out/k32/train.safetensors" --out "$out/k32p.safetensors" \
  --stop-when-certified --time-limit 600 | tail -n 2
