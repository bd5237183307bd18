#!/usr/bin/env python3
"""KKT certificate speed on `std` with a GD-trained width-100 net, --delta inf:
kktcert certify (l2, linf) vs scipy.optimize.nnls and linprog(method="highs")
on the same G, in one run. Medians of 5 repeats; solve times only (kktcert's
JSON `seconds`, SciPy's wall time around the solver call).

    python scripts/bench_kkt.py [NET]     (default: trains one with kktcert)
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import kkt_scipy  # noqa: E402

BIN = os.path.join(ROOT, "target/release/kktcert")
TRAIN = os.path.join(ROOT, "fixtures/std/train.safetensors")


def kktcert(args):
    subprocess.run([BIN, *args, "--quiet"], check=True, capture_output=True)


def main():
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    tmp = tempfile.mkdtemp()
    net = sys.argv[1] if len(sys.argv) > 1 else os.path.join(tmp, "net.safetensors")
    if len(sys.argv) <= 1:
        kktcert(["train", "--data", TRAIN, "--width", "100", "--out", net])
    G, theta = kkt_scipy.build(net, TRAIN)
    rows = []
    for norm, solve in (("l2", kkt_scipy.solve_l2), ("linf", kkt_scipy.solve_linf)):
        ours, theirs, value = [], [], None
        for _ in range(5):
            out = os.path.join(tmp, f"{norm}.json")
            kktcert(["certify", "--net", net, "--data", TRAIN, "--norm", norm, "--delta", "inf", "--act-tol", "0", "--json", out])
            cert = json.load(open(out))
            ours.append(cert["seconds"])
            t0 = time.perf_counter()
            value = solve(G, theta)
            theirs.append(time.perf_counter() - t0)
        rel = abs(cert["upper"] - value) / value
        rows.append((norm, statistics.median(ours), statistics.median(theirs), cert["lower"], cert["upper"], value, rel))
    print("| norm | kktcert s | SciPy s | ratio | kktcert [lower, upper] | SciPy optimum | rel. diff |")
    print("|---|---|---|---|---|---|---|")
    for norm, a, b, lo, up, v, rel in rows:
        peer = "nnls" if norm == "l2" else "HiGHS"
        print(f"| {norm} | {a:.4f} | {b:.4f} ({peer}) | {b / a:.1f}x | [{lo:.12e}, {up:.12e}] | {v:.12e} | {rel:.1e} |")


if __name__ == "__main__":
    main()
