"""Shared helpers for the Python package's tests: the CLI binary, the shipped
fixtures, and a safetensors writer that covers every dtype PyTorch saves
(BF16 included, which NumPy lacks)."""

import json
import os
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures"


@pytest.fixture(scope="module")
def cli():
    exe = Path(os.environ.get("KKTCERT_BIN", ROOT / "target" / "release" / "kktcert"))
    if not exe.exists():
        pytest.fail(f"kktcert binary not found at {exe}; build it (cargo build --release) or set KKTCERT_BIN")

    def run(*args, check=True):
        out = subprocess.run([str(exe), "--quiet", *map(str, args)], capture_output=True, text=True)
        if check and out.returncode != 0:
            raise AssertionError(f"kktcert {args} failed ({out.returncode}): {out.stderr}")
        return out

    return run


def bf16_bits(a):
    """float64 → bfloat16 bit patterns, round to nearest even (as torch does)."""
    u = np.asarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)


def bf16_values(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32).astype(np.float64)


def write_safetensors(path, tensors, metadata=None):
    """tensors: name → (dtype string, ndarray). Writes the safetensors layout by hand."""
    header, blobs, offset = {}, [], 0
    for name, (dtype, arr) in tensors.items():
        arr = np.ascontiguousarray(arr)
        if dtype == "BF16":
            raw = bf16_bits(arr).astype("<u2").tobytes()
        else:
            np_dtype = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8"}[dtype]
            raw = arr.astype(np_dtype).tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    if metadata:
        header["__metadata__"] = metadata
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    Path(path).write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def load_dataset(path):
    from safetensors.numpy import load_file

    t = load_file(str(path))
    return t["X"], t["y"]


def forward(W, b, v, X, c=0.0):
    return np.maximum(X @ W.T + b, 0.0) @ v + c


def strip_timing(value):
    """Removes wall-clock fields (`seconds`, `*_seconds`) recursively."""
    if isinstance(value, dict):
        return {k: strip_timing(v) for k, v in value.items() if "seconds" not in k}
    if isinstance(value, list):
        return [strip_timing(v) for v in value]
    return value
