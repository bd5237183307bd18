#!/usr/bin/env python3
"""Exact flip distance on deep multi-class nets: kktcert vs SCIP, one run.

    python scripts/bench_distance_deep.py [--nets 2x20,2x50,2x100,3x50] [--points 20]
                                          [--variants plain,small] [--time-limit 60]
                                          [--scip-time-limit 60] [--obbt] [--json out.json]

Nets: bias-carrying MLPs Linear-ReLU-...-Linear(10) trained with torch
(Adam, lr 1e-2, 200 full-batch epochs, float64) on scikit-learn's digits
scaled to [0, 1] (d = 64, 10 classes, 1,500 training points); `plain` is
trained on cross-entropy alone, `small` with weight decay 1e-3 (smaller
weights, larger margins). The points are the first --points test digits;
the question is the least ||delta|| for which the predicted class of
x0 + delta changes, with x0 + delta in the pixel box [0, 1]^64.

Peers, on the same points in the same run, each one point at a time:
  * kktcert: `kktcert distance --box 0:1 --threads 1`, its per-point time.
  * SCIP MIQP as MIPVerify formulates it (Tjeng et al., 2019): one binary
    per neuron whose pre-activation bounds straddle 0, big-M constraints
    from interval arithmetic over the box, the rival class chosen by one
    binary per class (sum = 1, f_j - f_c >= -M_j (1 - t_j)), objective
    sum delta_i^2, relative gap 1e-6.
  * with --obbt, the same MIQP after MIPVerify's LP bound tightening: each
    hidden neuron's bounds become the min and max of its pre-activation
    over the LP relaxation (triangle hulls of the earlier layers, the box),
    solved by SciPy's HiGHS, the setup time counted.
GeoCert is not run: its published code needs Gurobi at full licence size
and PyTorch 1.x; this script does not reimplement it.

A point agrees when both solvers prove an optimum and the distances agree
to 1e-6 relative. Prints one row per net (exact counts, median seconds, the
median over the points kktcert proves of SCIP's time over kktcert's — a
point SCIP leaves open counts at its time limit, so where it does the
ratio is a lower bound — the worst relative difference where both prove,
and conflicts: a bound of one solver beyond the other's witness) and
writes every point to --json.
"""
import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from safetensors.numpy import load_file, save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("KKTCERT_BIN", os.path.join(ROOT, "target/release/kktcert"))
REL = 1e-6
PROVEN = ("optimal", "gaplimit")  # SCIP stops at `gaplimit` once its relative gap is within REL


def digits():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    perm = np.random.default_rng(0).permutation(len(X))
    X, y = X[perm], y[perm]
    return X[:1500], y[:1500], X[1500:], y[1500:]


def train(widths, weight_decay, Xtr, ytr, seed=0):
    """An MLP trained with torch: its layers as (W, b) float64 pairs."""
    import torch

    torch.manual_seed(seed)
    mods, d = [], Xtr.shape[1]
    for w in widths:
        mods += [torch.nn.Linear(d, w), torch.nn.ReLU()]
        d = w
    mods.append(torch.nn.Linear(d, 10))
    model = torch.nn.Sequential(*mods).double()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=weight_decay)
    xt, yt = torch.tensor(Xtr), torch.tensor(ytr)
    for _ in range(200):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xt), yt).backward()
        opt.step()
    return model


def layers_of(model):
    lin = [m for m in model if hasattr(m, "weight")]
    return [(m.weight.detach().numpy().copy(), m.bias.detach().numpy().copy()) for m in lin]


def forward(layers, x):
    h = x
    for W, b in layers[:-1]:
        h = np.maximum(W @ h + b, 0.0)
    W, b = layers[-1]
    return W @ h + b


def interval_bounds(layers, lo, hi):
    """Pre-activation bounds of every hidden layer and the output over the box."""
    bounds, l, u = [], lo, hi
    for W, b in layers:
        Wp, Wn = np.maximum(W, 0), np.minimum(W, 0)
        zl, zu = Wp @ l + Wn @ u + b, Wp @ u + Wn @ l + b
        bounds.append((zl, zu))
        l, u = np.maximum(zl, 0), np.maximum(zu, 0)
    return bounds


def lp_bounds(layers, lo, hi):
    """MIPVerify's LP tightening: each hidden neuron's min and max over the
    LP relaxation of the layers before it (HiGHS)."""
    from scipy.optimize import linprog

    bounds = interval_bounds(layers, lo, hi)
    d = len(lo)
    for k in range(1, len(layers) - 1):
        # variables: x (d), then for each earlier layer its post-activations
        sizes = [W.shape[0] for W, _ in layers[:k]]
        nv = d + sum(sizes)
        A, rhs = [], []
        var_bounds = [(lo[i], hi[i]) for i in range(d)]
        start, prev = d, 0  # the previous layer's first variable (x's)
        for layer_idx in range(k):
            W, b = layers[layer_idx]
            zl, zu = bounds[layer_idx]
            n = W.shape[0]
            # z = W h_prev + b, with h_prev the previous variables
            P = np.zeros((n, nv))
            P[:, prev:prev + W.shape[1]] = W
            for j in range(n):
                col = start + j
                var_bounds.append((0.0, max(zu[j], 0.0)))
                if zu[j] <= 0:
                    e = np.zeros(nv); e[col] = 1; A.append(e); rhs.append(0.0)
                elif zl[j] >= 0:
                    e = np.zeros(nv); e[col] = 1
                    A.append(e - P[j]); rhs.append(b[j]); A.append(P[j] - e); rhs.append(-b[j])
                else:
                    e = np.zeros(nv); e[col] = 1
                    A.append(P[j] - e); rhs.append(-b[j])  # h >= z
                    s = zu[j] / (zu[j] - zl[j])
                    A.append(e - s * P[j]); rhs.append(s * (b[j] - zl[j]))  # h <= s (z - l)
            prev = start
            start += n
        W, b = layers[k]
        zl, zu = bounds[k][0].copy(), bounds[k][1].copy()
        A, rhs = np.array(A), np.array(rhs)
        for j in range(W.shape[0]):
            c = np.zeros(nv)
            c[prev:prev + W.shape[1]] = W[j]
            for sign in (1, -1):
                r = linprog(sign * c, A_ub=A, b_ub=rhs, bounds=var_bounds, method="highs")
                if r.status == 0:
                    v = sign * r.fun + b[j]
                    pad = 1e-6 * (1 + abs(v))
                    if sign == 1:
                        zl[j] = max(zl[j], v - pad)
                    else:
                        zu[j] = min(zu[j], v + pad)
        bounds[k] = (zl, zu)
        # propagate the tightened hidden bounds to the later layers by intervals
        l, u = np.maximum(zl, 0), np.maximum(zu, 0)
        for kk in range(k + 1, len(layers)):
            Wk, bk = layers[kk]
            Wp, Wn = np.maximum(Wk, 0), np.minimum(Wk, 0)
            nl, nu = Wp @ l + Wn @ u + bk, Wp @ u + Wn @ l + bk
            bounds[kk] = (np.maximum(bounds[kk][0], nl), np.minimum(bounds[kk][1], nu))
            l, u = np.maximum(bounds[kk][0], 0), np.maximum(bounds[kk][1], 0)
    return bounds


def scip_distance(layers, x0, bounds, time_limit):
    """SCIP's proven bracket on the MIQP; the witness checked by NumPy."""
    from pyscipopt import Model, quicksum

    f0 = forward(layers, x0)
    c = int(np.argmax(f0))
    md = Model()
    md.hideOutput()
    md.setParam("limits/gap", REL)
    md.setParam("limits/time", time_limit)
    md.setParam("numerics/feastol", 1e-9)
    x = [md.addVar(lb=0.0, ub=1.0) for _ in range(len(x0))]
    tau = md.addVar(lb=0)
    md.addCons(quicksum((x[i] - float(x0[i])) * (x[i] - float(x0[i])) for i in range(len(x0))) <= tau)
    h = x
    for (W, b), (zl, zu) in zip(layers[:-1], bounds[:-1]):
        nxt = []
        for j in range(W.shape[0]):
            z = quicksum(float(W[j, i]) * h[i] for i in range(len(h)) if W[j, i] != 0) + float(b[j])
            if zu[j] <= 0:
                nxt.append(0.0)
            elif zl[j] >= 0:
                a = md.addVar(lb=float(zl[j]), ub=float(zu[j]))
                md.addCons(a == z)
                nxt.append(a)
            else:
                a, t = md.addVar(lb=0, ub=float(zu[j])), md.addVar(vtype="B")
                md.addCons(a >= z)
                md.addCons(a <= z - float(zl[j]) * (1 - t))
                md.addCons(a <= float(zu[j]) * t)
                nxt.append(a)
        h = nxt
    W, b = layers[-1]
    f = [quicksum(float(W[j, i]) * h[i] for i in range(len(h)) if not isinstance(h[i], float)) + float(b[j])
         for j in range(W.shape[0])]
    out_lo, out_hi = bounds[-1]
    rivals = [j for j in range(W.shape[0]) if j != c and out_hi[j] >= out_lo[c]]
    if not rivals:
        return dict(status="infeasible", seconds=0.0, lower=math.inf, upper=None)
    ts = [md.addVar(vtype="B") for _ in rivals]
    md.addCons(quicksum(ts) == 1)
    for j, t in zip(rivals, ts):
        big_m = float(out_hi[c] - out_lo[j])
        md.addCons(f[j] - f[c] >= -big_m * (1 - t))
    md.setObjective(tau, "minimize")
    t0 = time.perf_counter()
    md.optimize()
    status = md.getStatus()
    res = dict(status=status, seconds=time.perf_counter() - t0,
               lower=math.inf if status == "infeasible" else math.sqrt(max(md.getDualbound(), 0.0)),
               upper=None)
    if md.getNSols() > 0:
        sol = md.getBestSol()
        w = np.array([sol[v] for v in x])
        fw = forward(layers, w)
        if max(fw[j] for j in range(len(fw)) if j != c) >= fw[c] - 1e-7:
            res["upper"] = float(np.linalg.norm(w - x0))
    return res


def kktcert_distances(path, data, n, time_limit):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "d.json")
        subprocess.run([BIN, "distance", "--net", path, "--data", data, "--box", "0:1",
                        "--threads", "1", "--time-limit", str(time_limit), "--indices", f"0:{n}",
                        "--json", out, "--quiet"], check=True, capture_output=True)
        return json.load(open(out))["points"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nets", default="2x20,2x50,2x100,3x50")
    ap.add_argument("--variants", default="plain,small")
    ap.add_argument("--points", type=int, default=20)
    ap.add_argument("--time-limit", type=float, default=60.0)
    ap.add_argument("--scip-time-limit", type=float, default=60.0)
    ap.add_argument("--no-scip", action="store_true", help="kktcert only")
    ap.add_argument("--obbt", action="store_true")
    ap.add_argument("--json")
    ap.add_argument("--summarise", metavar="JSON", help="print the rows of an earlier --json run")
    a = ap.parse_args()
    if a.summarise:
        for net in json.load(open(a.summarise))["nets"]:
            peers = {k: net[k] for k in ("scip", "scip_obbt") if k in net}
            print_row(summarise(net["net"], net["variant"], net["test_accuracy"], net["kktcert"], peers))
        return
    Xtr, ytr, Xte, yte = digits()
    X = Xte[: a.points]
    rows, records = [], []
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "points.safetensors")
        save_file({"X": np.ascontiguousarray(X), "y": yte[: a.points].astype(np.float64)}, data)
        for name in a.nets.split(","):
            depth, width = (int(t) for t in name.split("x"))
            widths = [width] * depth
            for variant in a.variants.split(","):
                model = train(widths, 1e-3 if variant == "small" else 0.0, Xtr, ytr)
                layers = layers_of(model)
                acc = float(np.mean([np.argmax(forward(layers, x)) == t for x, t in zip(Xte, yte)]))
                path = os.path.join(tmp, f"{name}-{variant}.safetensors")
                tensors = {}
                for i, (W, b) in enumerate(layers):
                    tensors[f"{2 * i}.weight"], tensors[f"{2 * i}.bias"] = W, b
                save_file(tensors, path)
                ours = kktcert_distances(path, data, a.points, a.time_limit)
                peers = {}
                if not a.no_scip:
                    lo, hi = np.zeros(X.shape[1]), np.ones(X.shape[1])
                    t0 = time.perf_counter()
                    ib = interval_bounds(layers, lo, hi)
                    peers["scip"] = [scip_distance(layers, x, ib, a.scip_time_limit) for x in X]
                    if a.obbt:
                        t1 = time.perf_counter()
                        lb = lp_bounds(layers, lo, hi)
                        setup = time.perf_counter() - t1
                        res = [scip_distance(layers, x, lb, a.scip_time_limit) for x in X]
                        for r in res:
                            r["seconds"] += setup / len(X)
                        peers["scip_obbt"] = res
                row = summarise(name, variant, acc, ours, peers)
                rows.append(row)
                records.append(dict(net=name, variant=variant, test_accuracy=acc, kktcert=ours, **peers))
                print_row(row)
                sys.stdout.flush()
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(dict(rows=rows, nets=records), fh, indent=1)


def summarise(name, variant, acc, ours, peers):
    row = dict(net=name, variant=variant, test_accuracy=acc, points=len(ours),
               exact=sum(p["status"] == "exact" for p in ours),
               median_s=statistics.median(p["seconds"] for p in ours))
    for peer, res in peers.items():
        solved = [i for i, r in enumerate(res) if r["status"] in PROVEN]
        row[f"{peer}_proven"] = len(solved)
        row[f"{peer}_median_s"] = statistics.median(r["seconds"] for r in res)
        # every point kktcert proves; a point the peer left open counts at its time limit
        ratios = [r["seconds"] / p["seconds"] for r, p in zip(res, ours) if p["status"] == "exact"]
        row[f"{peer}_median_ratio"] = statistics.median(ratios) if ratios else None
        diffs = [abs(res[i]["upper"] - ours[i]["upper"]) / max(1.0, ours[i]["upper"])
                 for i in solved if ours[i]["status"] == "exact" and res[i]["upper"] is not None]
        row[f"{peer}_max_rel_diff"] = max(diffs) if diffs else None
        # points SCIP brackets to 1e-4 (not 1e-6): how close its flip is to kktcert's distance
        near = [(r, p) for r, p in zip(res, ours) if r["upper"] is not None and p["status"] == "exact"
                and r["upper"] - r["lower"] <= 1e-4 * r["upper"]]
        row[f"{peer}_bracketed_1e-4"] = len(near)
        row[f"{peer}_bracketed_max_rel_diff"] = max(
            (abs(r["upper"] - p["upper"]) / max(1.0, p["upper"]) for r, p in near), default=None)
        # a proven SCIP bound above kktcert's witness, or a SCIP flip below kktcert's lower bound
        row[f"{peer}_conflicts"] = sum(
            1 for r, p in zip(res, ours)
            if (p["upper"] is not None and r["lower"] > p["upper"] * (1 + REL))
            or (r["upper"] is not None and p["lower"] is not None and r["upper"] < p["lower"] * (1 - REL)))
    return row


def print_row(row):
    text = (f"{row['net']:>6} {row['variant']:<6} acc {row['test_accuracy']:.3f}  kktcert "
            f"{row['exact']}/{row['points']} exact, median {row['median_s']:.3f}s")
    for peer in ("scip", "scip_obbt"):
        if f"{peer}_proven" in row:
            ratio = row[f"{peer}_median_ratio"]
            diff = row[f"{peer}_max_rel_diff"]
            text += (f" | {peer} {row[f'{peer}_proven']}/{row['points']} proven, median "
                     f"{row[f'{peer}_median_s']:.3f}s, ratio {'-' if ratio is None else f'{ratio:.1f}x'}"
                     f"{' (lower bound)' if row[f'{peer}_proven'] < row['points'] else ''}, "
                     f"max rel diff {'-' if diff is None else f'{diff:.1e}'}, conflicts {row[f'{peer}_conflicts']}")
            near = row[f"{peer}_bracketed_max_rel_diff"]
            text += (f", bracketed to 1e-4 on {row[f'{peer}_bracketed_1e-4']} "
                     f"(its flips within {'-' if near is None else f'{near:.1e}'} of kktcert's)")
    print(text)


if __name__ == "__main__":
    main()
