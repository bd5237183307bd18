#!/usr/bin/env python3
"""The deep KKT certificate's benchmark: a bias-free 3×100 MLP on
scikit-learn's digits (n = 1,000, d = 64, 10 classes), trained by full-batch
SGD in torch, then `kktcert certify` timed with and without the
complementarity row; and the same architecture with random weights and the
labels it predicts (every margin positive, a large support).

    python scripts/bench_kkt_deep.py [--steps 2000] [--repeats 3]

Needs torch and scikit-learn. Prints one line per case: median wall time,
peak RSS and the bracket.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "python"))
BIN = os.environ.get("KKTCERT_BIN", os.path.join(ROOT, "target/release/kktcert"))

from conftest import write_safetensors  # noqa: E402

import kktcert  # noqa: E402


def digits_net(steps):
    import torch
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X, y = X[:1000] / 16.0, y[:1000]
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(64, 100), torch.nn.ReLU(), torch.nn.Linear(100, 100, bias=False), torch.nn.ReLU(),
        torch.nn.Linear(100, 100, bias=False), torch.nn.ReLU(), torch.nn.Linear(100, 10, bias=False)).double()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    Xt, yt = torch.tensor(X), torch.tensor(y)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(Xt), yt).backward()
        opt.step()
    return kktcert.Net.from_torch(model), X, y


def random_net():
    rng = np.random.default_rng(1)
    widths = [64, 100, 100, 100, 10]
    net = kktcert.Net.from_layers([(rng.normal(size=(o, i)) / np.sqrt(i), None) for i, o in zip(widths[:-1], widths[1:])])
    X = rng.normal(size=(1000, 64))
    return net, X, net.forward(X).argmax(axis=1)


def run(net, X, y, extra, repeats, tmp):
    p, data, out = (os.path.join(tmp, f) for f in ("net.safetensors", "data.safetensors", "c.json"))
    net.save(p)
    write_safetensors(data, {"X": ("F64", X), "y": ("I64", y.astype(np.int64))})
    times, rss = [], 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        r = subprocess.run(["/usr/bin/time", "-f", "%M", BIN, "certify", "--net", p, "--data", data, "--json", out,
                            "--quiet", *extra], check=True, capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        rss = max(rss, int(r.stderr.strip().splitlines()[-1]) / 1024)
    c = json.load(open(out))
    return (f"{np.median(times):.2f} s, {rss:.0f} MiB, [{c['lower']:.9e}, {c['upper']:.9e}] ({c['verdict']}), "
            f"support {len(c['support'])} of {c['constraints']}, {c['near_kink_points']} near-kink points")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        net, X, y = digits_net(a.steps)
        print("digits, trained, δ_rel 1e-4:", run(net, X, y, [], a.repeats, tmp), flush=True)
        print("digits, trained, no δ row:", run(net, X, y, ["--delta", "inf"], a.repeats, tmp), flush=True)
        net, X, y = random_net()
        print("random weights, predicted labels, δ_rel 1e-4:", run(net, X, y, [], a.repeats, tmp), flush=True)


if __name__ == "__main__":
    main()
