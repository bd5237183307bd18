#!/usr/bin/env python3
"""Independent oracle for `kktcert certify --delta inf --act-tol 0`.

    python scripts/kkt_scipy.py CHECKPOINT TRAIN [--time]

Builds G (p x n, columns h_i = y_i grad_theta N(x_i), ReLU'(0) = 0) from
scratch in NumPy, rescales theta to min-margin 1, and solves
  l2:   min ||theta - G lam||_2,   lam >= 0   (scipy.optimize.nnls)
  linf: min t s.t. -t <= theta - G lam <= t, lam >= 0   (linprog, HiGHS)
Prints JSON with both optima (and solve times with --time).
"""
import json
import sys
import time

import numpy as np
from safetensors.numpy import load_file
from scipy.optimize import linprog, nnls


def build(ckpt, train):
    net, ds = load_file(ckpt), load_file(train)
    W, b, v = (net[k].astype(np.float64) for k in ("W", "b", "v"))
    X, y = ds["X"].astype(np.float64), ds["y"].astype(np.float64)
    q = y * (np.maximum(X @ W.T + b, 0) @ v)
    a = 1.0 / np.sqrt(q.min())
    W, b, v = a * W, a * b, a * v
    U = X @ W.T + b
    S = (U > 0).astype(float)
    m, d = W.shape
    n = X.shape[0]
    G = np.zeros((m * (d + 2), n))
    for i in range(n):
        gw = (S[i] * v)[:, None] * X[i][None, :]
        G[:, i] = y[i] * np.concatenate([gw.ravel(), S[i] * v, np.maximum(U[i], 0)])
    theta = np.concatenate([W.ravel(), b, v])
    return G, theta


def solve_l2(G, theta):
    lam, res = nnls(G, theta, maxiter=50 * G.shape[1])
    return res


def solve_linf(G, theta):
    p, n = G.shape
    c = np.zeros(n + 1)
    c[-1] = 1.0
    ones = np.ones((p, 1))
    A = np.vstack([np.hstack([-G, -ones]), np.hstack([G, -ones])])
    rhs = np.concatenate([-theta, theta])
    r = linprog(c, A_ub=A, b_ub=rhs, bounds=[(0, None)] * (n + 1), method="highs")
    return r.fun


def main():
    ckpt, train = sys.argv[1:3]
    timed = "--time" in sys.argv
    G, theta = build(ckpt, train)
    out = {"theta_norm_l2": float(np.linalg.norm(theta)), "theta_norm_linf": float(np.abs(theta).max())}
    for name, fn in (("l2", solve_l2), ("linf", solve_linf)):
        t0 = time.perf_counter()
        out[name] = float(fn(G, theta))
        out[name + "_seconds"] = time.perf_counter() - t0
    if not timed:
        out = {k: v for k, v in out.items() if not k.endswith("_seconds")}
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
