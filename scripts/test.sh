#!/usr/bin/env bash
# The test command: the Rust suite in release mode (the numerics are slow in
# debug), then the Python package's pytest suite when KKTCERT_PYTHON names an
# interpreter with kktcert installed (`pip install .`). Rust tests whose
# oracle is Python are #[ignore]d and run (with --include-ignored) only when
# KKTCERT_PYTHON is set. A skipped Python suite says so; with
# KKTCERT_REQUIRE_PYTHON set (as in CI) it fails instead.
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
elif [ -n "${KKTCERT_REQUIRE_PYTHON:-}" ]; then
  echo "error: KKTCERT_REQUIRE_PYTHON is set but KKTCERT_PYTHON='$py' cannot import kktcert, pytest, onnx, safetensors" >&2
  exit 1
else
  echo "SKIPPED: Python package tests (set KKTCERT_PYTHON to a venv with 'pip install . pytest onnx safetensors scipy \"dask[distributed]\"')"
fi
