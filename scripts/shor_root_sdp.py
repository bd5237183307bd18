#!/usr/bin/env python3
"""The Shor SDP bound at the root of a point's distance search (SPEC §4, "The multi-neuron bound").

    python scripts/shor_root_sdp.py NET.safetensors DATA.safetensors INDEX

An independent oracle for `quadratic.rs`: the S-lemma bound the search's
L-BFGS maximises, solved as a semidefinite program by cvxpy + Clarabel.
With every hurting neuron free (s0·v_j < 0, a_j = |v_j|) under the parabola
p z² + (a/2) z + a²/(16p), helping ones under −λ a z, and α = νp, μ = νλ:

    max t  s.t.  [[I − W_Fᵀ diag(α) W_F, −½Wᵀc], [−½cᵀW, −k − t]] ⪰ 0,
                 16 α_j g_j ≥ (ν a_j)², 0 ≤ μ ≤ ν,

with c = 2α∘u0 + β (β = νa/2 on F, −μa on the helping neurons) and
k = Σ α u0² + βᵀu0 + Σ g. √t bounds the distance; kktcert's root bound
(`quadratic::flip_distance_bound`) approaches it from below. Needs numpy,
safetensors and cvxpy; a net without an output bias.
"""
import sys

import cvxpy as cp
import numpy as np
from safetensors.numpy import load_file


def main(net_path, data_path, index):
    net, data = load_file(net_path), load_file(data_path)
    w, b, v = (net[k].astype(float) for k in ("W", "b", "v"))
    x0 = data["X"][index].astype(float)
    u0 = w @ x0 + b
    s0 = np.sign(v @ np.maximum(u0, 0))
    a = np.abs(v)
    free, help_ = np.where(s0 * v < 0)[0], np.where(s0 * v > 0)[0]
    d = w.shape[1]
    nu = cp.Variable(nonneg=True)
    alpha = cp.Variable(len(free), nonneg=True)
    g = cp.Variable(len(free))
    mu = cp.Variable(len(help_), nonneg=True)
    t = cp.Variable()
    beta = cp.hstack([nu * a[free] / 2, -cp.multiply(mu, a[help_])])
    rows = np.vstack([w[free], w[help_]])
    u = np.concatenate([u0[free], u0[help_]])
    c = cp.hstack([2 * cp.multiply(alpha, u0[free]), np.zeros(len(help_))]) + beta
    k = alpha @ (u0[free] ** 2) + beta @ u + cp.sum(g)
    quad = np.eye(d) - w[free].T @ cp.diag(alpha) @ w[free]
    lin = cp.reshape(-0.5 * (rows.T @ c), (d, 1), order="F")
    lmi = cp.bmat([[quad, lin], [lin.T, cp.reshape(-k - t, (1, 1), order="F")]])
    cons = [lmi >> 0, mu <= nu]
    cons += [cp.quad_over_lin(nu * a[j] / 4, alpha[i]) <= g[i] for i, j in enumerate(free)]
    cp.Problem(cp.Maximize(t), cons).solve(solver="CLARABEL")
    lam_min = np.linalg.eigvalsh(np.eye(d) - w[free].T @ np.diag(alpha.value) @ w[free])[0]
    lam = mu.value / nu.value
    ends = int(np.sum((lam < 1e-6) | (lam > 1 - 1e-6)))
    print(f"root bound {np.sqrt(max(t.value, 0.0)):.6f}  (D = {t.value:.9g}, nu = {nu.value:.6g})")
    print(f"lambda_min(I - nu A) = {lam_min:.3g}; {ends} of {len(lam)} helping lambdas at 0 or 1")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
