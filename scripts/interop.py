#!/usr/bin/env python3
"""Round trip between kktcert files and NumPy, with the `safetensors` package.

    python scripts/interop.py CHECKPOINT DATASET OUT_CHECKPOINT

1. reads a kktcert checkpoint (W [m,d], b [m], v [m]) and dataset (X, y),
2. recomputes N(x) = relu(X W^T + b) v in NumPy and prints it as JSON,
3. writes a checkpoint of its own (W built as the transpose of a [d,m]
   array, the case that trips the NumPy writer) for kktcert to read back.

Trap: safetensors' NumPy writer (0.8.0) stores a non-C-contiguous array's raw
buffer under its logical shape, so `save_file({"W": A.T})` silently scrambles
W. Always pass `np.ascontiguousarray(...)`.
"""
import json
import sys

import numpy as np
from safetensors.numpy import load_file, save_file


def forward(W, b, v, X):
    return np.maximum(X @ W.T + b, 0.0) @ v


def main(ckpt, data, out):
    net = load_file(ckpt)
    ds = load_file(data)
    W, b, v = (net[k].astype(np.float64) for k in ("W", "b", "v"))
    X, y = ds["X"].astype(np.float64), ds["y"].astype(np.float64)
    outputs = forward(W, b, v, X)
    # A [d, m] array whose transpose is W: non-contiguous, must be copied.
    Wt = np.asfortranarray(W).T.T.copy(order="F")  # Fortran order: not C-contiguous
    assert not Wt.flags["C_CONTIGUOUS"]
    save_file(
        {
            "W": np.ascontiguousarray(Wt * 2.0),
            "b": np.ascontiguousarray(b * 2.0),
            "v": np.ascontiguousarray(v * 0.5),
        },
        out,
        metadata={"format": "kktcert/two-layer-relu/v1", "producer": "scripts/interop.py"},
    )
    json.dump(
        {
            "outputs": outputs.tolist(),
            "accuracy": float(np.mean(np.sign(outputs) == y)),
            # N(x; 2W, 2b, v/2) = N(x; W, b, v): the written net computes the same function.
            "written_outputs": forward(Wt * 2.0, b * 2.0, v * 0.5, X).tolist(),
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main(*sys.argv[1:4])
