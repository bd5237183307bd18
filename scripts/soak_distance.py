#!/usr/bin/env python3
"""Soak: every exact flip distance of `kktcert distance` against SCIP and Gurobi.

    python scripts/soak_distance.py [--nets 150] [--points 20] [--seed 0]
                                    [--jobs 2] [--json soak.json]
    python scripts/soak_distance.py --quick        # CI's slice (~1 min)

Draws two-layer ReLU nets N(x) = sum_j v_j ReLU(w_j.x + b_j) (+ c) of width
10-40 on inputs of dimension 5-40, half of them trained by kktcert itself
(`gen` with k 2-6 clusters, then `train` with init scale log-uniform in
[0.01, 1] for 50, 300 or 2,000 steps), half random with planted
degeneracies: duplicated neurons, positive rescalings of a neuron (the same
hyperplane), cancelling pairs (w, b, v) and (w, b, -v), constant neurons
(w = 0, b > 0), dead neurons (w = 0, b <= 0), and an output bias c, written
as a PyTorch state dict so the loader is exercised too. For every point,
kktcert's `[lower, upper]` is compared with each solver's proof of

    min ||delta||^2  s.t.  s0 * N(x0 + delta) <= 0,   s0 = sign N(x0),

encoded independently of kktcert: every neuron that can switch inside the
ball is a big-M ReLU with its own binary (no argument about which neurons
need one), bounds u_j(x0) +- R ||w_j|| over the ball of radius R, the
variables scaled to the unit ball, relative gap 1e-9 and feasibility
tolerance 1e-9. R is the norm of kktcert's witness after this script's own
NumPy forward pass confirms that it flips (so the optimum lies in the ball);
a `no_flip` claim is checked on a ball of radius 1e3 (1 + ||x0||). SCIP is
required; Gurobi joins where `gurobipy` imports with a licence (its pip
wheel's size-limited licence covers these nets). A solver that stops at its
time limit is judged on the bracket it proved.

Each solver's verdict on a point is
  * **wrong** when its bracket excludes kktcert's: kktcert's lower bound
    exceeds a flip the solver found (NumPy-checked) by more than 1e-6
    relative, or the witness fails the forward pass, or a `no_flip` claim
    meets a flip;
  * **disagree** when the solver's proven lower bound exceeds kktcert's
    NumPy-checked witness by more than 1e-6 relative;
  * **not exact** when kktcert's status is `bounded`;
  * **confirmed** when kktcert is exact and the solver's proven lower bound
    is within 1e-6 relative of kktcert's witness (or both find no flip);
  * **unproven** when the solver's bracket is still too wide to tell.
A point is confirmed when one solver confirms it and none objects. The run
prints one line per net and a summary, writes every point to --json, and
exits 1 on any wrong bracket or disagreement (the instance is saved under
--keep for a regression test).
"""
import argparse
import json
import math
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from safetensors.numpy import load_file, save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("KKTCERT_BIN", os.path.join(ROOT, "target/release/kktcert"))
REL = 1e-6  # relative tolerance of a comparison between two exact distances
GAP = 1e-9  # relative gap each solver is asked to close
FLIP_TOL = 1e-9  # kktcert's witness: s0 * N(witness) <= FLIP_TOL * (1 + |N(x0)|)


def run(*args):
    subprocess.run([BIN, *args, "--quiet"], check=True, capture_output=True)


def output(net, X):
    """N(X) by NumPy, in float64: sum_j v_j ReLU(W X + b) + c."""
    return np.maximum(X @ net["W"].T + net["b"], 0.0) @ net["v"] + net.get("c", 0.0)


def trained_net(rng, tmp, points):
    """A net kktcert trained on its own clustered fixture; the fixture's test points."""
    k, d, width = int(rng.integers(2, 7)), int(rng.integers(5, 41)), int(rng.integers(10, 41))
    n = int(rng.integers(2 * k, 12 * k + 1))
    scale = float(10 ** rng.uniform(-2, 0))
    sigma = float(rng.choice([0.3, 0.5, 1.0, 2.0]))
    fx = os.path.join(tmp, "fx")
    run("gen", "--k", str(k), "--d", str(d), "--n", str(n), "--n-test", str(points),
        "--sigma", str(sigma), "--seed", str(int(rng.integers(1 << 30))), "--out", fx)
    path = os.path.join(tmp, "net.safetensors")
    steps = int(rng.choice([50, 300, 2000]))
    run("train", "--data", os.path.join(fx, "train.safetensors"), "--width", str(width),
        "--init-scale", str(scale), "--steps", str(steps),
        "--seed", str(int(rng.integers(1 << 30))), "--out", path)
    net = {key: load_file(path)[key].astype(np.float64) for key in ("W", "b", "v")}
    desc = f"trained k={k} d={d} n={n} width={width} sigma={sigma} init={scale:.3f} steps={steps}"
    return desc, path, net, os.path.join(fx, "test.safetensors")


def plant(rng, W, b, v):
    """Degenerate neurons: duplicates, rescalings, cancelling pairs, constant and dead ones."""
    m = len(v)
    kinds = []
    for _ in range(int(rng.integers(1, max(2, m // 4)))):
        i, j = rng.integers(m, size=2)
        kind = rng.choice(["duplicate", "rescale", "cancel", "constant", "dead"])
        if kind == "duplicate":
            W[j], b[j], v[j] = W[i], b[i], v[i]
        elif kind == "rescale":
            t = float(rng.uniform(0.2, 5.0))
            W[j], b[j] = t * W[i], t * b[i]
        elif kind == "cancel":
            W[j], b[j], v[j] = W[i], b[i], -v[i]
        elif kind == "constant":
            W[j], b[j] = 0.0, abs(b[j]) + 0.1
        else:
            W[j], b[j] = 0.0, -abs(b[j])
        kinds.append(str(kind))
    return kinds


def random_net(rng, tmp, points):
    """A Gaussian net with planted degeneracies, as a PyTorch-layout state dict."""
    d, m = int(rng.integers(5, 41)), int(rng.integers(10, 41))
    W = rng.standard_normal((m, d))
    b = rng.standard_normal(m) * float(rng.choice([0.0, 0.5, 2.0]))
    v = rng.standard_normal(m) / math.sqrt(m)
    kinds = plant(rng, W, b, v)
    c = float(rng.standard_normal() * 0.3) if rng.random() < 0.5 else None
    net = {"W": W, "b": b, "v": v}
    tensors = {"0.weight": W, "0.bias": b, "2.weight": v.reshape(1, m)}
    if c is not None:
        net["c"] = c
        tensors["2.bias"] = np.array([c])
    path = os.path.join(tmp, "net.safetensors")
    save_file({key: np.ascontiguousarray(a) for key, a in tensors.items()}, path)
    X = rng.standard_normal((points, d)) * float(rng.choice([0.5, 1.0, 3.0]))
    y = np.where(rng.random(points) < 0.8, np.sign(output(net, X)), -np.sign(output(net, X)))
    y[y == 0] = 1.0
    data = os.path.join(tmp, "points.safetensors")
    save_file({"X": np.ascontiguousarray(X), "y": y}, data)
    desc = f"random d={d} width={m} c={'none' if c is None else f'{c:.3f}'} planted={','.join(kinds)}"
    return desc, path, net, data


def ball_model(net, x0, radius):
    """The MIQP's data: s0, pre-activations u0 at x0, their bounds over the ball."""
    W, b = net["W"], net["b"]
    u0 = W @ x0 + b
    reach = radius * np.linalg.norm(W, axis=1)
    return np.sign(output(net, x0[None, :])[0]), u0, u0 - reach, u0 + reach


def scip_distance(net, x0, radius, time_limit):
    """SCIP's proven bracket on min ||delta|| with s0 N(x0 + delta) <= 0 in the ball."""
    from pyscipopt import Model, quicksum

    W, v, c = net["W"], net["v"], net.get("c", 0.0)
    s0, u0, lo, hi = ball_model(net, x0, radius)
    md = Model()
    md.hideOutput()
    md.setParam("limits/gap", GAP)
    md.setParam("limits/time", time_limit)
    md.setParam("numerics/feastol", 1e-9)
    t = [md.addVar(lb=-1, ub=1) for _ in range(W.shape[1])]
    tau = md.addVar(lb=0)
    md.addCons(quicksum(ti * ti for ti in t) <= tau)
    md.addCons(quicksum(ti * ti for ti in t) <= 1)
    terms = []
    for j in np.where(hi > 0)[0]:
        u = quicksum(radius * float(W[j, i]) * t[i] for i in np.flatnonzero(W[j])) + float(u0[j])
        if lo[j] >= 0:
            terms.append(float(v[j]) * u)
            continue
        a, z = md.addVar(lb=0, ub=float(hi[j])), md.addVar(vtype="B")
        md.addCons(a >= u)
        md.addCons(a <= u - float(lo[j]) * (1 - z))
        md.addCons(a <= float(hi[j]) * z)
        terms.append(float(v[j]) * a)
    md.addCons(float(s0) * (quicksum(terms) + float(c)) <= 0)
    md.setObjective(tau, "minimize")
    t0 = time.perf_counter()
    try:
        md.optimize()
    except Exception as e:  # SCIP gives up on numerically hard LPs: say so, do not crash
        return dict(status=f"error ({e})", seconds=time.perf_counter() - t0, lower=0.0)
    status = md.getStatus()
    res = dict(status=status, seconds=time.perf_counter() - t0,
               lower=math.inf if status == "infeasible"
               else radius * math.sqrt(max(md.getDualbound(), 0.0)))
    if md.getNSols() > 0:
        sol = md.getBestSol()
        res.update(flip_check(net, x0, radius * np.array([sol[ti] for ti in t])))
    return res


def gurobi_distance(net, x0, radius, time_limit):
    """Gurobi's proven bracket on the same MIQP (the objective a convex quadratic)."""
    import gurobipy as gp

    W, v, c = net["W"], net["v"], net.get("c", 0.0)
    s0, u0, lo, hi = ball_model(net, x0, radius)
    with gp.Env(params={"OutputFlag": 0}) as env, gp.Model(env=env) as md:
        for name, value in (("MIPGap", GAP), ("TimeLimit", time_limit), ("Threads", 1),
                            ("MIPGapAbs", 0.0), ("FeasibilityTol", 1e-9),
                            ("IntFeasTol", 1e-9), ("OptimalityTol", 1e-9)):
            md.setParam(name, value)
        t = md.addMVar(W.shape[1], lb=-1, ub=1)
        md.addConstr(t @ t <= 1)
        terms = []
        for j in np.where(hi > 0)[0]:
            u = (radius * W[j]) @ t + u0[j]
            if lo[j] >= 0:
                terms.append(v[j] * u)
                continue
            a, z = md.addVar(lb=0, ub=hi[j]), md.addVar(vtype="B")
            md.addConstr(a >= u)
            md.addConstr(a <= u - lo[j] * (1 - z))
            md.addConstr(a <= hi[j] * z)
            terms.append(v[j] * a)
        md.addConstr(s0 * (gp.quicksum(terms) + c) <= 0)
        md.setObjective(t @ t)
        t0 = time.perf_counter()
        try:
            md.optimize()
        except gp.GurobiError as e:
            return dict(status=f"error ({e})", seconds=time.perf_counter() - t0, lower=0.0)
        status = {gp.GRB.OPTIMAL: "optimal", gp.GRB.INFEASIBLE: "infeasible",
                  gp.GRB.TIME_LIMIT: "timelimit"}.get(md.Status, f"status {md.Status}")
        res = dict(status=status, seconds=time.perf_counter() - t0,
                   lower=math.inf if status == "infeasible"
                   else radius * math.sqrt(max(md.ObjBound, 0.0)))
        if md.SolCount > 0:
            res.update(flip_check(net, x0, radius * t.X))
    return res


def flip_check(net, x0, dx):
    """A solver's point, made an exact flip by NumPy: solvers meet s0 N <= 0
    only to their feasibility tolerance, which near the boundary is worth
    more than 1e-6 of the distance, so up to three Newton steps along the
    input gradient move it onto s0 N(x0 + dx) <= 0 exactly (a piecewise-
    linear N needs one when the pattern holds). Returns its distance and
    whether it now flips."""
    n0 = output(net, x0[None, :])[0]
    s0 = np.sign(n0)
    for _ in range(4):
        n = output(net, (x0 + dx)[None, :])[0]
        if s0 * n <= 0:
            return dict(distance=float(np.linalg.norm(dx)), flips=True)
        active = (net["W"] @ (x0 + dx) + net["b"]) > 0
        g = net["W"].T @ (net["v"] * active)
        if not g.any():
            break
        dx = dx - g * (n / (g @ g)) * (1 + 1e-12)
    return dict(distance=float(np.linalg.norm(dx)), flips=False)


def judge(p, net, x0, peer):
    """What one exact solver's bracket says of kktcert's answer on one point.

    'confirmed' (the solver's own bracket lies within REL of kktcert's exact
    value, or both say no flip), 'unproven' (the solver's bracket is too wide
    to tell), 'not_exact' (kktcert's status is `bounded`), or 'wrong: …' /
    'disagree: …'.
    """
    n0 = output(net, x0[None, :])[0]
    feasible = peer.get("distance") if peer.get("flips") else None
    if p["status"] == "no_flip":
        if feasible is not None:
            return f"wrong: no_flip but the solver flips at {feasible:.12g}"
        return "confirmed" if peer["status"] == "infeasible" else "unproven"
    if p["status"] == "on_boundary":
        return "confirmed" if n0 == 0 else f"wrong: on_boundary but N(x0) = {n0}"
    w = np.array(p["witness"])
    if np.sign(n0) * output(net, w[None, :])[0] > FLIP_TOL * (1 + abs(n0)):
        return "wrong: the witness does not flip"
    if abs(np.linalg.norm(w - x0) - p["upper"]) > 1e-9 * (1 + p["upper"]):
        return "wrong: upper is not the witness's distance"
    if feasible is not None and p["lower"] > feasible * (1 + REL) + 1e-12:
        return f"wrong: lower {p['lower']:.12g} > the solver's flip at {feasible:.12g}"
    if p["upper"] < peer["lower"] * (1 - REL) - 1e-12:
        return f"disagree: the solver's bound {peer['lower']:.12g} > kktcert's witness {p['upper']:.12g}"
    if p["status"] != "exact":
        return "not_exact"
    if peer["lower"] >= p["upper"] * (1 - REL) - 1e-12:
        return "confirmed"
    return "unproven"


def worst(verdicts):
    """The verdict of a point over all solvers: the most serious one."""
    order = ("wrong", "disagree", "not_exact", "unproven", "confirmed")
    return min(verdicts, key=lambda v: order.index(v.split(":")[0]))


def one_net(job):
    """Draw net `job['case']`, run kktcert on its points, judge each against every solver."""
    rng = np.random.default_rng([job["seed"], job["case"]])
    with tempfile.TemporaryDirectory() as tmp:
        make = trained_net if job["case"] % 2 == 0 else random_net
        desc, net_path, net, data_path = make(rng, tmp, job["points"])
        out = os.path.join(tmp, "d.json")
        t0 = time.perf_counter()
        run("distance", "--net", net_path, "--data", data_path, "--threads", "1",
            "--time-limit", str(job["time_limit"]), "--json", out)
        ours_s = time.perf_counter() - t0
        X = load_file(data_path)["X"].astype(np.float64)
        rows = []
        for p in json.load(open(out))["points"]:
            x0 = X[p["index"]]
            radius = (p["upper"] * (1 + 1e-6) + 1e-9 if p["upper"] is not None
                      else 1e3 * (1 + np.linalg.norm(x0)))
            peers = {name: PEERS[name](net, x0, radius, job["solver_time_limit"])
                     for name in job["solvers"]}
            for res in peers.values():
                res["verdict"] = judge(p, net, x0, res)
            rows.append(dict(index=p["index"], status=p["status"], lower=p["lower"],
                             upper=p["upper"], nodes=p["nodes"], seconds=p["seconds"],
                             peers=peers, verdict=point_verdict(peers)))
        if any(r["verdict"].split(":")[0] in ("wrong", "disagree") for r in rows) and job["keep"]:
            os.makedirs(job["keep"], exist_ok=True)
            for src, name in ((net_path, "net"), (data_path, "data")):
                dst = os.path.join(job["keep"], f"case{job['case']}-{name}.safetensors")
                subprocess.run(["cp", src, dst], check=True)
    return dict(case=job["case"], net=desc, kktcert_seconds=ours_s, points=rows)


PEERS = {"SCIP": scip_distance, "Gurobi": gurobi_distance}


def point_verdict(peers):
    """A point is confirmed when one solver confirms it and none objects."""
    verdicts = [res["verdict"] for res in peers.values()]
    if any(v.split(":")[0] in ("wrong", "disagree", "not_exact") for v in verdicts):
        return worst(verdicts)
    return "confirmed" if "confirmed" in verdicts else "unproven"


def available_solvers(wanted):
    """The solvers asked for that import here; SCIP is required, Gurobi optional."""
    try:
        import pyscipopt  # noqa: F401
    except ImportError:
        sys.exit("error: pyscipopt is required (pip install pyscipopt)")
    solvers = ["SCIP"]
    if wanted != "scip":
        try:
            import gurobipy as gp

            with gp.Env(params={"OutputFlag": 0}):
                solvers.append("Gurobi")
        except Exception as e:  # not installed, or no licence
            if wanted == "both":
                sys.exit(f"error: --solvers both, but Gurobi is unavailable: {e}")
            print(f"Gurobi unavailable ({e}); SCIP only", file=sys.stderr)
    return solvers


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nets", type=int, default=150, help="nets to draw (half trained, half random)")
    ap.add_argument("--points", type=int, default=20, help="points per net")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=2, help="nets in flight (one core each)")
    ap.add_argument("--time-limit", type=float, default=60, help="kktcert seconds per point")
    ap.add_argument("--solvers", choices=("auto", "scip", "both"), default="auto",
                    help="auto: SCIP, and Gurobi where it imports with a licence")
    ap.add_argument("--solver-time-limit", type=float, default=2.0,
                    help="seconds per point for each solver (its bracket is judged when it stops)")
    ap.add_argument("--cases", help="only these case numbers (comma-separated), to re-run a report's line")
    ap.add_argument("--quick", action="store_true",
                    help="CI's slice: 10 nets x 8 points, 1 s per solver")
    ap.add_argument("--json", help="write every point's comparison here")
    ap.add_argument("--keep", default="soak-failures",
                    help="directory for the nets and points of a failing case")
    a = ap.parse_args()
    if a.quick:
        a.nets, a.points, a.solver_time_limit = 10, 8, 1.0
    if not os.path.exists(BIN):
        sys.exit(f"error: {BIN} not found (cargo build --release, or set KKTCERT_BIN)")
    solvers = available_solvers(a.solvers)
    jobs = [dict(case=i, seed=a.seed, points=a.points, time_limit=a.time_limit,
                 solver_time_limit=a.solver_time_limit, solvers=solvers, keep=a.keep)
            for i in (map(int, a.cases.split(",")) if a.cases else range(a.nets))]
    t0 = time.perf_counter()
    results = []
    with multiprocessing.Pool(a.jobs, initializer=quiet_stderr) as pool:
        for r in pool.imap_unordered(one_net, jobs):
            results.append(r)
            print(f"case {r['case']:4d}: {r['net']}: {len(r['points'])} points, "
                  + ", ".join(f"{k} {v}" for k, v in sorted(tally(r["points"]).items())),
                  flush=True)
            for p in r["points"]:
                if p["verdict"] != "confirmed":
                    print(f"    point {p['index']}: {p['verdict']} (kktcert {p['status']} "
                          f"[{p['lower']}, {p['upper']}], {p['peers']})", flush=True)
    points = [p for r in results for p in r["points"]]
    print(summary(results, points, solvers, time.perf_counter() - t0))
    if a.json:
        tmp = a.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump(dict(solvers=solvers, rel=REL, gap=GAP, nets=results), f)
        os.replace(tmp, a.json)
    counts = tally(points)
    sys.exit(1 if counts.get("wrong", 0) + counts.get("disagree", 0) else 0)


def quiet_stderr():
    """Silence SoPlex's tolerance notes in the workers (the solvers' verdicts are in the rows)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)


def summary(results, points, solvers, seconds):
    counts = tally(points)
    per_solver = "; ".join(
        f"{name}: confirms {sum(p['peers'][name]['verdict'] == 'confirmed' for p in points)}, "
        f"median {median([p['peers'][name]['seconds'] for p in points]):.3f} s/point"
        for name in solvers)
    return (f"\n{len(results)} nets, {len(points)} points in {seconds:.0f} s: "
            f"confirmed {counts.get('confirmed', 0)}, wrong {counts.get('wrong', 0)}, "
            f"disagreeing {counts.get('disagree', 0)}, not exact {counts.get('not_exact', 0)}, "
            f"unproven by every solver {counts.get('unproven', 0)}; "
            f"no_flip {sum(p['status'] == 'no_flip' for p in points)}; "
            f"kktcert median {median([p['seconds'] for p in points]):.4f} s/point; {per_solver}")


def tally(points):
    counts = {}
    for p in points:
        key = p["verdict"].split(":")[0]
        counts[key] = counts.get(key, 0) + 1
    return counts


def median(xs):
    return float(np.median(xs)) if xs else float("nan")


if __name__ == "__main__":
    main()
