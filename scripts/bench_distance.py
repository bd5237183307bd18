#!/usr/bin/env python3
"""Exact flip distance: kktcert vs SCIP (pyscipopt) on the same points, one run.

    python scripts/bench_distance.py [--points 20] [--scip-time-limit 300]
                                     [--widths 50,100,200,400] [--sweep-points 5]
    python scripts/bench_distance.py --wide [--widths 200,400] [--time-limit 60] [--obbt]
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

--obbt adds a second SCIP peer whose big-Ms are first tightened the way
MIPVerify tightens them: each hurting neuron's l_j, h_j become the min and max
of w_j.(x0+delta)+b_j over the convex relaxation (the ball of radius R, the
helping neurons' epigraphs, the hurting neurons' chords, the flip row), solved
by Clarabel through cvxpy, in rounds while some range shrinks by 1% (at most
--obbt-rounds). Each bound is widened by 1e-6 (1 + |bound|) against the
interior-point tolerance; a solve Clarabel does not report optimal leaves
its bound as it was. The bounds depend on kktcert only through R, the
norm of a witness that a forward pass confirmed; SCIP proves the distance.
Needs cvxpy and clarabel besides pyscipopt.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np
from safetensors.numpy import load_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target/release/kktcert")
FX = os.path.join(ROOT, "fixtures/std")


def run(*args):
    subprocess.run([BIN, *args, "--quiet"], check=True, capture_output=True)


def ball_bounds(W, b, x0, radius):
    """Range of each pre-activation u_j = w_j.(x0+delta)+b_j over ||delta|| <= radius."""
    u0 = W @ x0 + b
    wn = np.linalg.norm(W, axis=1)
    return u0 - radius * wn, u0 + radius * wn


def flip_sign(W, b, v, x0):
    return np.sign(np.maximum(W @ x0 + b, 0) @ v)


def tighten(W, b, v, x0, radius, max_rounds):
    """OBBT of the hurting neurons' ranges; returns (lo, hi, rounds)."""
    u0 = W @ x0 + b
    s0 = flip_sign(W, b, v, x0)
    lo, hi = ball_bounds(W, b, x0, radius)
    for rounds in range(1, max_rounds + 1):
        prob, c, hurting = relaxation(W, v, u0, s0, lo, hi, radius)
        new_lo, new_hi = lo.copy(), hi.copy()
        for j in hurting:
            for sign in (1.0, -1.0):
                c.value = sign * W[j]
                with warnings.catch_warnings():
                    # An inaccurate solve is skipped below; its warning adds nothing.
                    warnings.filterwarnings("ignore", message="Solution may be inaccurate")
                    prob.solve(solver="CLARABEL")
                if prob.status != "optimal":
                    continue  # "optimal_inaccurate" and the like: keep the looser bound
                val = sign * prob.value + u0[j]
                pad = 1e-6 * (1 + abs(val))
                if sign > 0:
                    new_lo[j] = max(lo[j], val - pad)
                else:
                    new_hi[j] = min(hi[j], val + pad)
        shrunk = any(new_hi[j] - new_lo[j] < 0.99 * (hi[j] - lo[j]) for j in hurting)
        lo, hi = new_lo, new_hi
        if not shrunk:
            break
    return lo, hi, rounds


def relaxation(W, v, u0, s0, lo, hi, radius):
    """min c.delta over the ball, exact helping epigraphs, hurting chords, the flip row."""
    import cvxpy as cp

    hurt = s0 * v < 0
    unstable = (lo < 0) & (hi > 0)
    active, hurting, helping = (np.where(mask)[0] for mask in
                                (lo >= 0, unstable & hurt, unstable & ~hurt))
    delta = cp.Variable(W.shape[1])
    a_hurt, a_help = cp.Variable(len(hurting)), cp.Variable(len(helping))
    u_hurt = W[hurting] @ delta + u0[hurting]
    u_help = W[helping] @ delta + u0[helping]
    chord = hi[hurting] / (hi[hurting] - lo[hurting])
    out = s0 * (v[active] @ (W[active] @ delta + u0[active]) + v[hurting] @ a_hurt
                + v[helping] @ a_help)
    cons = [cp.norm(delta) <= radius, out <= 0,
            a_hurt >= u_hurt, a_hurt >= 0, a_hurt <= cp.multiply(chord, u_hurt - lo[hurting]),
            a_help >= u_help, a_help >= 0]
    c = cp.Parameter(W.shape[1])
    return cp.Problem(cp.Minimize(c @ delta), cons), c, hurting


def scip_distance(W, b, v, x0, radius, lo, hi, time_limit):
    from pyscipopt import Model, quicksum

    m, d = W.shape
    u0 = W @ x0 + b
    s0 = flip_sign(W, b, v, x0)
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
    return dict(distance=val, seconds=secs, status=status)


def peers(net, x0, radius, a):
    """Each SCIP peer's result on one point: plain, and with --obbt the tightened one."""
    W, b, v = (net[k].astype(float) for k in ("W", "b", "v"))
    x0 = x0.astype(float)
    out = {"SCIP": scip_distance(W, b, v, x0, radius, *ball_bounds(W, b, x0, radius),
                                 a.scip_time_limit)}
    if a.obbt:
        t0 = time.perf_counter()
        lo, hi, rounds = tighten(W, b, v, x0, radius, a.obbt_rounds)
        obbt = time.perf_counter() - t0
        res = scip_distance(W, b, v, x0, radius, lo, hi, a.scip_time_limit)
        res["status"] += f" (OBBT {obbt:.1f} s, {rounds} rounds)"
        res["seconds"] += obbt
        out["SCIP+OBBT"] = res
    return out


def compare(net_path, label, points, a, tmp, fx):
    out = os.path.join(tmp, f"{label}.json")
    run("distance", "--net", net_path, "--data", os.path.join(fx, "test.safetensors"),
        "--indices", f"0:{points}", "--threads", "1", "--fixture", fx, "--json", out,
        "--time-limit", str(a.time_limit))
    ours = json.load(open(out))["points"]
    net = load_file(net_path)
    X = load_file(os.path.join(fx, "test.safetensors"))["X"]
    rows = []
    for p in ours:
        rows.append(dict(ours=p, peers=peers(net, X[p["index"]], p["upper"] * (1 + 1e-6), a)))
        print(f"{label}: {point_line(rows[-1])}", file=sys.stderr, flush=True)
    return rows


def point_line(r):
    """index, kktcert distance, status, nodes, seconds, then each peer's distance, seconds, status."""
    p = r["ours"]
    theirs = ", ".join(f"{name} {q['distance']:.9f}, {q['seconds']:.2f}, {q['status']}"
                       for name, q in r["peers"].items())
    return f"{p['index']}, {p['upper']:.9f}, {p['status']}, {p['nodes']}, {p['seconds']:.3f}, {theirs}"


def summary(label, rows, peer):
    """One table row: medians, the ratio, and the distances SCIP proved."""
    ours = statistics.median(r["ours"]["seconds"] for r in rows)
    theirs = statistics.median(r["peers"][peer]["seconds"] for r in rows)
    slowest = min(r["peers"][peer]["seconds"] / r["ours"]["seconds"] for r in rows)
    exact = sum(r["ours"]["status"] == "exact" for r in rows)
    proven = [r for r in rows if r["peers"][peer]["status"].startswith("optimal")]
    diff = max((abs(r["ours"]["upper"] - r["peers"][peer]["distance"]) / r["ours"]["upper"]
                for r in proven), default=float("nan"))
    nodes = statistics.median(r["ours"]["nodes"] for r in rows)
    return (f"| {label} | {peer} | {len(rows)} | {ours:.3f} | {theirs:.2f} | {theirs / ours:.0f}x"
            f" | {slowest:.0f}x | {exact}/{len(rows)} | {len(proven)}/{len(rows)} | {diff:.1e}"
            f" | {nodes:.0f} |")


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
    ap.add_argument("--obbt", action="store_true",
                    help="also run SCIP with big-Ms tightened by OBBT (needs cvxpy, clarabel)")
    ap.add_argument("--obbt-rounds", type=int, default=10, help="most OBBT rounds per point")
    a = ap.parse_args()
    if a.obbt_rounds < 1:
        ap.error("--obbt-rounds must be at least 1")
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
    print("| net | peer | points | kktcert median s | peer median s | ratio of medians"
          " | least ratio | kktcert exact | peer proven | max rel. diff (proven) |"
          " kktcert nodes (median) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    detail = []
    for label, path, pts in nets:
        rows = compare(path, label.replace(" ", "_"), pts, a, tmp, fx)
        for peer in rows[0]["peers"]:
            print(summary(label, rows, peer))
        detail.extend((label, r) for r in rows)
    print("\nper point: net, index, kktcert distance, status, nodes, kktcert s,"
          " then per peer: distance, s, status")
    for label, r in detail:
        print(f"{label}, {point_line(r)}")

if __name__ == "__main__":
    main()
