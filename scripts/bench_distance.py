#!/usr/bin/env python3
"""Exact flip distance: kktcert vs SCIP (pyscipopt) on the same points, one run.

    python scripts/bench_distance.py [--points 20] [--scip-time-limit 300]
                                     [--widths 50,100,200,400] [--sweep-points 5]
    python scripts/bench_distance.py --wide [--widths 200,400] [--time-limit 60]
    python scripts/bench_distance.py --mnist [--points 5] [--scip-time-limit 300]

--points 0 leaves out the width-100 and robust nets (only the sweep widths).

Nets on the `std` fixture: a GD-trained width-100 net, the width-10 robust
net, and GD nets of the sweep widths. With --wide, GD nets of the given
widths on a k=6, d=100, n=60 fixture (`gen --seed 1`, 6 test points, all
certified). With --mnist, a GD net of width 1000 on a k=10, d=784, n=200
fixture (`gen --seed 2`, an MNIST-sized hidden layer), its first --points
test points. The peer is the exact MIQP
  min ||delta||^2  s.t.  s0 * sum_j v_j a_j <= 0,  a_j = ReLU(w_j.(x0+delta)+b_j)
with the big-M ReLU encoding (binary z_j, bounds l_j, h_j of u_j over the
ball of radius R = kktcert's certified upper bound) for the hurting neurons
(s0·v_j < 0) and the exact epigraph a_j >= u_j, a_j >= 0 for the helping
ones, stable neurons fixed, relative gap 1e-9. Prints per-net medians, per-point times and the ratio.
"""
import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time

import numpy as np
from safetensors.numpy import load_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target/release/kktcert")
FX = os.path.join(ROOT, "fixtures/std")


def run(*args):
    subprocess.run([BIN, *args, "--quiet"], check=True, capture_output=True)


def scip_distance(W, b, v, x0, radius, time_limit):
    from pyscipopt import Model, quicksum

    m, d = W.shape
    u0 = W @ x0 + b
    s0 = np.sign(np.maximum(u0, 0) @ v)
    wn = np.linalg.norm(W, axis=1)
    lo, hi = u0 - radius * wn, u0 + radius * wn
    md = Model()
    md.hideOutput()
    md.setParam("limits/gap", 1e-9)
    md.setParam("limits/time", time_limit)
    delta = [md.addVar(lb=-radius, ub=radius) for _ in range(d)]
    tau = md.addVar(lb=0)
    md.addCons(quicksum(t * t for t in delta) <= tau)
    out = []
    for j in range(m):
        u = quicksum(W[j, c] * delta[c] for c in range(d)) + u0[j]
        if hi[j] <= 0:
            continue
        if lo[j] >= 0:
            out.append(v[j] * u)
            continue
        a = md.addVar(lb=0, ub=hi[j])
        md.addCons(a >= u)
        if s0 * v[j] < 0:
            # Only a hurting neuron needs its ReLU exactly: a helping one
            # enters s0·N with a positive weight, so the epigraph a ≥ u,
            # a ≥ 0 is tight at every optimum.
            z = md.addVar(vtype="B")
            md.addCons(a <= u - lo[j] * (1 - z))
            md.addCons(a <= hi[j] * z)
        out.append(v[j] * a)
    md.addCons(s0 * quicksum(out) <= 0)
    md.setObjective(tau, "minimize")
    t0 = time.perf_counter()
    md.optimize()
    secs = time.perf_counter() - t0
    val = float(np.sqrt(md.getObjVal())) if md.getNSols() > 0 else float("nan")
    status = md.getStatus()
    if status != "optimal":
        status += f" (lower bound {np.sqrt(max(md.getDualbound(), 0.0)):.4f})"
    return val, secs, status


def compare(net_path, label, points, scip_limit, tmp, fx, time_limit):
    out = os.path.join(tmp, f"{label}.json")
    run("distance", "--net", net_path, "--data", os.path.join(fx, "test.safetensors"),
        "--indices", f"0:{points}", "--threads", "1", "--fixture", fx, "--json", out,
        "--time-limit", str(time_limit))
    ours = json.load(open(out))["points"]
    net = load_file(net_path)
    X = load_file(os.path.join(fx, "test.safetensors"))["X"]
    rows = []
    for p in ours:
        x0 = X[p["index"]]
        val, secs, status = scip_distance(net["W"].astype(float), net["b"].astype(float),
                                          net["v"].astype(float), x0.astype(float),
                                          p["upper"] * (1 + 1e-6), scip_limit)
        rows.append((p["index"], p["upper"], p["status"], p["nodes"], p["seconds"], val, secs, status))
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=20)
    ap.add_argument("--scip-time-limit", type=float, default=300)
    ap.add_argument("--widths", default="50,100,200,400")
    ap.add_argument("--sweep-points", type=int, default=5)
    ap.add_argument("--wide", action="store_true",
                    help="GD nets of --widths on a k=6, d=100, n=60 fixture, all 6 test points")
    ap.add_argument("--mnist", action="store_true",
                    help="a GD width-1000 net on a k=10, d=784, n=200 fixture, --points test points")
    ap.add_argument("--time-limit", type=float, default=60, help="kktcert seconds per point")
    a = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    tmp = tempfile.mkdtemp()
    nets = []
    fx = FX
    if a.mnist:
        fx = os.path.join(tmp, "mnist")
        run("gen", "--k", "10", "--d", "784", "--n", "200", "--seed", "2", "--out", fx)
        p = os.path.join(tmp, "gd1000.safetensors")
        run("train", "--data", os.path.join(fx, "train.safetensors"), "--width", "1000", "--out", p)
        nets.append(("GD width 1000, d=784", p, a.points))
    elif a.wide:
        fx = os.path.join(tmp, "wide")
        run("gen", "--k", "6", "--d", "100", "--sigma", "1", "--n", "60", "--n-test", "6",
            "--seed", "1", "--out", fx)
    elif a.points > 0:
        gd = os.path.join(tmp, "gd100.safetensors")
        run("train", "--data", os.path.join(fx, "train.safetensors"), "--width", "100", "--out", gd)
        robust = os.path.join(tmp, "robust.safetensors")
        run("robust", "--fixture", fx, "--out", robust)
        nets.append(("GD width 100", gd, a.points))
        nets.append(("robust width 10", robust, a.points))
    for w in [] if a.mnist else [int(x) for x in a.widths.split(",") if x]:
        p = os.path.join(tmp, f"gd{w}.safetensors")
        run("train", "--data", os.path.join(fx, "train.safetensors"), "--width", str(w), "--out", p)
        nets.append((f"GD width {w}" + ("" if a.wide else " (sweep)"), p,
                     6 if a.wide else a.sweep_points))
    print("| net | points | kktcert median s | SCIP median s | ratio | kktcert exact | max rel. diff | kktcert nodes (median) |")
    print("|---|---|---|---|---|---|---|---|")
    detail = []
    for label, path, pts in nets:
        rows = compare(path, label.replace(" ", "_"), pts, a.scip_time_limit, tmp, fx, a.time_limit)
        ours = statistics.median(r[4] for r in rows)
        theirs = statistics.median(r[6] for r in rows)
        exact = sum(r[2] == "exact" for r in rows)
        diff = max(abs(r[1] - r[5]) / r[1] for r in rows)
        nodes = statistics.median(r[3] for r in rows)
        print(f"| {label} | {len(rows)} | {ours:.3f} | {theirs:.2f} | {theirs / ours:.0f}x | {exact}/{len(rows)} | {diff:.1e} | {nodes:.0f} |")
        detail.extend((label, *r) for r in rows)
    print("\nper point: net, index, kktcert distance, status, nodes, kktcert s, SCIP distance, SCIP s, SCIP status")
    for r in detail:
        print(f"{r[0]}, {r[1]}, {r[2]:.9f}, {r[3]}, {r[4]}, {r[5]:.3f}, {r[6]:.9f}, {r[7]:.2f}, {r[8]}")


if __name__ == "__main__":
    main()
