"""kktcert from Python: KKT certificates, exact flip distances, polish and
the universal attack for two-layer ReLU networks N(x) = Σ_j v_j ReLU(w_j·x + b_j).

Arrays may be float16/32/64 in any memory order; they are widened exactly to
C-contiguous float64 before the Rust core sees them. Every dict has the keys
of the corresponding ``kktcert ... --json`` output. Solves release the GIL.
Bad input raises ``ValueError`` with the CLI's message.

From a PyTorch model ``nn.Sequential(nn.Linear(d, m), nn.ReLU(), nn.Linear(m, 1, bias=False))``::

    import kktcert
    W, b, v = (t.detach().numpy() for t in (model[0].weight, model[0].bias, model[2].weight[0]))
    cert = kktcert.certify(W, b, v, X, y)          # X [n, d], y in {-1, +1}
    print(cert["verdict"], cert["relative_upper"])
"""

import json

import numpy as np

from . import _native

__all__ = ["load_net", "certify", "distance", "polish", "attack", "merge"]


def _f64(a, name, ndim):
    arr = np.ascontiguousarray(np.asarray(a), dtype=np.float64)
    if arr.ndim != ndim:
        raise ValueError(f"invalid parameter `{name}`: shape {arr.shape}, expected {ndim} dimension(s)")
    return arr


def _net(W, b, v):
    W = _f64(W, "W", 2)
    v = np.asarray(v)
    if v.ndim == 2 and v.shape[0] == 1:  # PyTorch's second-layer weight [1, m]
        v = v[0]
    return W, _f64(b, "b", 1), _f64(v, "v", 1)


def load_net(path, tensors=None, with_bias=False):
    """(W, b, v) of a checkpoint: kktcert's safetensors, a PyTorch state dict
    with two linear layers (any F16/BF16/F32/F64), or an ONNX export.

    ``tensors="W=fc1.weight,b=fc1.bias,v=fc2.weight"`` names them explicitly.
    A second layer with a bias gives an output bias c: it is returned as a
    fourth element when ``with_bias`` is true, and refused otherwise (so it
    is never silently dropped).
    """
    (W, b, v), c = _native.load_net(str(path), tensors)
    if with_bias:
        return W, b, v, c
    if c != 0.0:
        raise ValueError(
            f"{path}: field `c`: the net has an output bias c = {c:g}; "
            "call load_net(path, with_bias=True) and pass c= to distance/attack"
        )
    return W, b, v


def certify(W, b, v, X, y, norm="l2", tol=1e-4, delta=None, act_tol=1e-6, method="auto"):
    """KKT certificate of Problem (2) for the net on (X, y): the dict of
    ``kktcert certify --json``. ``delta=None`` uses ``tol`` (as the CLI);
    ``delta=float('inf')`` drops the complementarity row. ``method`` is the
    CLI's ``--method``: auto, full or working-set (for large n)."""
    W, b, v = _net(W, b, v)
    if delta is None:
        delta = tol
    elif np.isinf(delta):
        delta = None
    out = _native.certify_json(W, b, v, _f64(X, "X", 2), _f64(y, "y", 1), norm, float(tol), delta, float(act_tol), method)
    return json.loads(out)


def distance(W, b, v, X, indices=None, time_limit=60.0, max_nodes=None, threads=None, y=None, c=0.0):
    """Certified exact minimal ℓ2 flip distances: the ``points`` of
    ``kktcert distance --json``. ``y`` (the labels reported) defaults to the
    net's own signs; ``c`` is an output bias."""
    W, b, v = _net(W, b, v)
    X = _f64(X, "X", 2)
    if y is None:
        out = X @ W.T + b
        f = np.maximum(out, 0.0) @ v + c
        y = np.where(f >= 0, 1.0, -1.0)
    idx = list(range(X.shape[0])) if indices is None else [int(i) for i in indices]
    out = _native.distance_json(W, b, v, float(c), X, _f64(y, "y", 1), idx, time_limit, max_nodes, threads)
    return json.loads(out)


def polish(W, b, v, X, y, tol=1e-4, act_tol=1e-4, mode="near", proximal=1.0, iterations=100_000,
           time_limit=None, stop_when_certified=False):
    """Polish toward a certified KKT point: (W, b, v, report) with the report
    of ``kktcert polish --json``. ``mode="near"`` finds one close to the
    given net (the one GD is heading for); ``"sparse"`` has no pull. The
    polish stops after ``iterations`` L-BFGS iterations (the same point on
    any machine), or after ``time_limit`` seconds if given."""
    W, b, v = _net(W, b, v)
    (W2, b2, v2), rep = _native.polish_json(
        W, b, v, _f64(X, "X", 2), _f64(y, "y", 1), float(tol), float(act_tol), str(mode), float(proximal), int(iterations), time_limit, bool(stop_when_certified)
    )
    return W2, b2, v2, json.loads(rep)


def attack(W, b, v, means, mean_labels, X, y, grid=41, max_radius=None, c=0.0):
    """The universal attack along Σ_q y_q μ_q: the report of
    ``kktcert attack --json`` for one net."""
    W, b, v = _net(W, b, v)
    out = _native.attack_json(
        W, b, v, float(c), _f64(means, "means", 2), _f64(mean_labels, "mean_labels", 1), _f64(X, "X", 2), _f64(y, "y", 1), int(grid), max_radius
    )
    return json.loads(out)


def merge(shards, out):
    """Combine the outputs of ``--shard i/N`` runs (JSON files of ``distance``,
    ``certify`` or ``attack``, or ``reproduce`` directories) into ``out``,
    exactly as the unsharded run writes it. Returns ``(command, shards)``."""
    return _native.merge([str(s) for s in shards], str(out))
