#!/usr/bin/env python3
"""GD step on `std` (n=100, d=400, m=100): kktcert (Rust) vs NumPy, same run.

    python scripts/bench_train.py

Runs `cargo bench --bench gd_step` and the identical step in NumPy (forward,
logistic-loss gradient for W, b, v, update), 7 x 200 repeats each, and prints
median seconds per step and the ratio.
"""
import os
import subprocess
import time

import numpy as np
from safetensors.numpy import load_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def numpy_step_time():
    ds = load_file(os.path.join(ROOT, "fixtures/std/train.safetensors"))
    X, y = ds["X"], ds["y"]
    n, d = X.shape
    m = 100
    rng = np.random.default_rng(0)
    W = rng.normal(size=(m, d)) * 0.1 / np.sqrt(d)
    b = rng.normal(size=m) * 0.1 / np.sqrt(d)
    v = rng.normal(size=m) * 0.1 / np.sqrt(m)
    times = []
    for _ in range(7):
        t0 = time.perf_counter()
        for _ in range(200):
            U = X @ W.T + b
            A = np.maximum(U, 0)
            q = y * (A @ v)
            coef = -y / (1 + np.exp(q)) / n
            gv = A.T @ coef
            M = (U > 0) * coef[:, None] * v[None, :]
            gW = M.T @ X
            gb = M.sum(axis=0)
            W, b, v = W - 1e-3 * gW, b - 1e-3 * gb, v - 1e-3 * gv
        times.append((time.perf_counter() - t0) / 200)
    return float(np.median(times))


def rust_step_time():
    out = subprocess.run(
        ["cargo", "bench", "--quiet", "--bench", "gd_step"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    line = next(l for l in out.splitlines() if l.startswith("gd_step_seconds"))
    return float(line.split()[1])


if __name__ == "__main__":
    rust = rust_step_time()
    numpy = numpy_step_time()
    print("| implementation | median seconds per GD step |")
    print("|---|---|")
    print(f"| kktcert (Rust, nalgebra) | {rust:.6f} |")
    print(f"| NumPy {np.__version__} | {numpy:.6f} |")
    print(f"ratio NumPy / kktcert = {numpy / rust:.2f}x")
