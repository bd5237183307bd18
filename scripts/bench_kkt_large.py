#!/usr/bin/env python3
"""The ℓ2 certificate at MNIST sizes: n = 5,000 and 60,000 clustered points
(k = 10, d = 784, seed 1), a width-1000 net trained on the first 1,000, with
the complementarity row (δ_rel = 1e-4, the default) and without it (inf).
At n = 5,000 both methods run (full Gram and working set) and their brackets
are compared; at n = 60,000 only the working set fits. Medians of 3 runs of
wall time (the process, loading included) and peak resident memory.

    python3 scripts/bench_kkt_large.py [WORKDIR]
"""
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target/release/kktcert")


def kktcert(*args):
    subprocess.run([BIN, *args, "--quiet"], check=True, capture_output=True)


def timed(args):
    """(wall s, peak RSS MiB) of one run, from GNU time."""
    out = subprocess.run(["/usr/bin/time", "-f", "%e %M", BIN, *args, "--quiet"],
                         check=True, capture_output=True, text=True)
    wall, rss = re.findall(r"([\d.]+) (\d+)\s*$", out.stderr)[-1]
    return float(wall), int(rss) / 1024


def main():
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    work = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp()
    sets = {}
    for n in (1000, 5000, 60000):
        out = os.path.join(work, f"n{n}")
        if not os.path.exists(os.path.join(out, "train.safetensors")):
            kktcert("gen", "--k", "10", "--d", "784", "--n", str(n), "--n-test", "100", "--seed", "1", "--out", out)
        sets[n] = os.path.join(out, "train.safetensors")
    net = os.path.join(work, "net.safetensors")
    if not os.path.exists(net):
        kktcert("train", "--data", sets[1000], "--width", "1000", "--steps", "300", "--out", net)
    print("| n | δ_rel | method | wall s (median of 3) | peak RSS MiB | [lower, upper] | rounds / final set |")
    print("|---|---|---|---|---|---|---|")
    brackets = {}
    for n in (5000, 60000):
        for delta in ("1e-4", "inf"):
            for method in (("full", "working-set") if n == 5000 else ("working-set",)):
                js = os.path.join(work, f"c-{n}-{delta}-{method}.json")
                args = ["certify", "--net", net, "--data", sets[n], "--delta", delta, "--method", method, "--json", js]
                runs = [timed(args) for _ in range(3)]
                cert = json.load(open(js))
                brackets[(n, delta, method)] = (cert["lower"], cert["upper"])
                ws = cert.get("working_set")
                extra = f"{ws['rounds']} / {ws['points']} points" if ws else "—"
                print(f"| {n} | {delta} | {method} | {statistics.median(r[0] for r in runs):.2f} | "
                      f"{statistics.median(r[1] for r in runs):.0f} | [{cert['lower']:.12e}, {cert['upper']:.12e}] | {extra} |")
    for delta in ("1e-4", "inf"):
        (fl, fu), (wl, wu) = brackets[(5000, delta, "full")], brackets[(5000, delta, "working-set")]
        print(f"n = 5000, δ {delta}: |Δupper|/upper = {abs(fu - wu) / fu:.1e}, |Δlower|/upper = {abs(fl - wl) / fu:.1e}")


if __name__ == "__main__":
    main()
