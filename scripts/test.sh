#!/usr/bin/env bash
# The test command: the Rust suite in release mode (the numerics are slow in
# debug), then the Python package's pytest suite when KKTCERT_PYTHON names an
# interpreter with kktcert installed (`pip install .`). Rust tests whose
# oracle is Python are #[ignore]d and run (with --include-ignored) only when
# KKTCERT_PYTHON is set. A skipped Python suite says so; with
# KKTCERT_REQUIRE_PYTHON set (as in CI) it fails instead. Last, a slice of
# the exact-distance soak against SCIP (and Gurobi where it imports):
# scripts/soak_distance.py --quick; the full soak is the same script without
# --quick (see README, Testing).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${KKTCERT_PYTHON:-}" ]; then
  cargo test --release "$@" -- --include-ignored
else
  cargo test --release "$@"
fi
cargo build --release --quiet
py="${KKTCERT_PYTHON:-}"
if [ -n "$py" ] && "$py" -c "import kktcert._native, pytest, onnx, safetensors" 2>/dev/null; then
  KKTCERT_BIN="$PWD/target/release/kktcert" "$py" -m pytest -q -p no:cacheprovider tests/python
  if "$py" -c "import pyscipopt" 2>/dev/null; then
    KKTCERT_BIN="$PWD/target/release/kktcert" "$py" scripts/soak_distance.py --quick --keep target/soak-failures
  elif [ -n "${KKTCERT_REQUIRE_PYTHON:-}" ]; then
    echo "error: KKTCERT_REQUIRE_PYTHON is set but KKTCERT_PYTHON='$py' cannot import pyscipopt (the soak's oracle)" >&2
    exit 1
  else
    echo "SKIPPED: the distance soak against SCIP (pip install pyscipopt)"
  fi
elif [ -n "${KKTCERT_REQUIRE_PYTHON:-}" ]; then
  echo "error: KKTCERT_REQUIRE_PYTHON is set but KKTCERT_PYTHON='$py' cannot import kktcert, pytest, onnx, safetensors" >&2
  exit 1
else
  echo "SKIPPED: Python package tests (set KKTCERT_PYTHON to a venv with 'pip install . pytest onnx safetensors scipy \"dask[distributed]\"')"
fi
