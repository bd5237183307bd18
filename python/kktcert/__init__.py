"""kktcert from Python: KKT certificates, exact flip distances, polish and
the universal attack for two-layer ReLU networks N(x) = Σ_j v_j ReLU(w_j·x + b_j),
and loading and evaluating fully connected ReLU nets of any depth (:class:`Net`).

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

__all__ = ["Net", "load", "load_net", "certify", "distance", "polish", "attack", "merge"]


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


class Net:
    """A fully connected ReLU net of any depth, scalar or C-class output:
    f(x) = W_{L+1} ReLU(… ReLU(W_1 x + b_1) …) + b_{L+1}.

    ``layers`` is the list of ``(W, b)`` float64 pairs, input first, ``W``
    of shape ``[out, in]`` and ``b`` of shape ``[out]`` or ``None``. The
    two-layer net of the other functions is ``Net.from_layers([(W, b), (v[None], None)])``.
    """

    def __init__(self, layers):
        if len(layers) < 2:
            raise ValueError(f"invalid parameter `layers`: {len(layers)} layer(s), expected at least two")
        self.layers = []
        for i, (W, b) in enumerate(layers):
            W = _f64(W, f"layers[{i}].W", 2)
            if b is not None:
                b = _f64(b, f"layers[{i}].b", 1)
                if b.shape[0] != W.shape[0]:
                    raise ValueError(f"invalid parameter `layers[{i}].b`: length {b.shape[0]}, expected {W.shape[0]}")
            if self.layers and self.layers[-1][0].shape[0] != W.shape[1]:
                raise ValueError(
                    f"invalid parameter `layers[{i}].W`: takes {W.shape[1]} inputs but layer {i - 1} "
                    f"has {self.layers[-1][0].shape[0]} outputs")
            self.layers.append((W, b))

    @classmethod
    def from_layers(cls, layers):
        """A net from ``[(W1, b1), (W2, b2), …]`` (NumPy arrays; ``b`` may be None)."""
        return cls(layers)

    @classmethod
    def from_torch(cls, model):
        """A net from a ``torch.nn.Sequential`` of ``Linear``, ``ReLU`` and
        ``Flatten`` (a ``Linear`` followed by ``ReLU`` is a hidden layer, the
        last ``Linear`` the output); anything else is refused by name."""
        import torch.nn as nn

        layers, expect_relu = [], False
        for i, module in enumerate(model):
            if isinstance(module, nn.Linear) and not expect_relu:
                bias = None if module.bias is None else module.bias.detach().cpu().double().numpy()
                layers.append((module.weight.detach().cpu().double().numpy(), bias))
                expect_relu = True
            elif isinstance(module, nn.ReLU) and expect_relu:
                expect_relu = False
            elif isinstance(module, (nn.Flatten, nn.Identity)):
                continue
            else:
                raise ValueError(f"invalid parameter `model`: module {i} ({type(module).__name__}) where a "
                                 f"{'ReLU' if expect_relu else 'Linear'} was expected; supported: an nn.Sequential "
                                 "of Linear, ReLU (after every Linear but the last) and Flatten")
        if not expect_relu:
            raise ValueError("invalid parameter `model`: the last module must be a Linear layer (the output)")
        return cls(layers)

    @property
    def hidden_layers(self):
        """L, the number of ReLU layers."""
        return len(self.layers) - 1

    @property
    def homogeneous(self):
        """Whether f(x; αθ) = α^(L+1) f(x; θ): no nonzero bias after the first layer."""
        return all(b is None or not np.any(b) for _, b in self.layers[1:])

    def forward(self, X):
        """f on X [n, d]: shape [n] for one output, [n, C] for C classes."""
        h = _f64(X, "X", 2)
        for i, (W, b) in enumerate(self.layers):
            h = h @ W.T + (0.0 if b is None else b)
            if i + 1 < len(self.layers):
                h = np.maximum(h, 0.0)
        return h[:, 0] if h.shape[1] == 1 else h

    def save(self, path):
        """Writes a PyTorch-layout state dict (``0.weight``, ``0.bias``,
        ``2.weight``, …, F64) that ``load`` and every CLI command read."""
        from safetensors.numpy import save_file

        tensors = {}
        for i, (W, b) in enumerate(self.layers):
            tensors[f"{2 * i}.weight"] = np.ascontiguousarray(W)
            if b is not None:
                tensors[f"{2 * i}.bias"] = np.ascontiguousarray(b)
        save_file(tensors, str(path))


def load(path):
    """The :class:`Net` in a file: a PyTorch state dict of any depth (F16/BF16/F32/F64),
    kktcert's two-layer safetensors, or an ONNX export (either torch exporter)."""
    return Net(_native.load_layers(str(path)))


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


def _as_net(model):
    """A :class:`Net` from a Net or a torch ``nn.Sequential``; None for anything else."""
    if isinstance(model, Net):
        return model
    if type(model).__module__.startswith("torch"):
        return Net.from_torch(model)
    return None


def certify(W, b=None, v=None, X=None, y=None, norm="l2", tol=1e-4, delta=None, act_tol=1e-6, method="auto"):
    """KKT certificate of the max-margin problem: the dict of ``kktcert certify --json``.

    ``certify(W, b, v, X, y)`` for the two-layer net, or ``certify(net, X, y)``
    for a :class:`Net` or a torch ``nn.Sequential`` of any depth (homogeneous:
    no bias after the first layer; ``y`` ±1 for one output, classes 0…C−1
    otherwise; ℓ2 only). ``delta=None`` uses ``tol`` (as the CLI);
    ``delta=float('inf')`` drops the complementarity row. ``method`` is the
    CLI's ``--method``: auto, full or working-set (for large n)."""
    if delta is None:
        delta = tol
    elif np.isinf(delta):
        delta = None
    net = _as_net(W)
    if net is not None:
        X, y = (X, y) if X is not None else (b, v)
        out = _native.certify_deep_json(net.layers, _f64(X, "X", 2), _f64(y, "y", 1), float(tol), delta, float(act_tol))
        return json.loads(out)
    W, b, v = _net(W, b, v)
    out = _native.certify_json(W, b, v, _f64(X, "X", 2), _f64(y, "y", 1), norm, float(tol), delta, float(act_tol), method)
    return json.loads(out)


def distance(W, b=None, v=None, X=None, indices=None, time_limit=60.0, max_nodes=None, threads=None, y=None,
             c=0.0, box=None, target=None):
    """Certified exact minimal ℓ2 flip distances: the ``points`` of
    ``kktcert distance --json``.

    ``distance(W, b, v, X)`` for the two-layer net (``y``, the labels
    reported, defaults to the net's own signs; ``c`` is an output bias).

    ``distance(net, X, y=None, box=None, target=None, ...)`` for a
    :class:`Net` or a torch ``nn.Sequential`` of any depth and output: the
    least ‖δ‖ for which the class of ``x + δ`` leaves ``y`` (default: the
    class predicted at ``x``), optionally to class ``target`` only, with
    ``x + δ`` inside ``box = (lo, hi)`` (scalars or arrays of length d).
    Each dict has ``status``, ``lower``, ``upper``, ``witness``,
    ``witness_class``, ``witness_margin``, ``nodes`` and ``seconds``.
    The two-layer form with ``box`` or ``target`` runs the same search."""
    net = _as_net(W)
    if net is None and (box is not None or target is not None):
        W, b, v = _net(W, b, v)
        last = (v[None, :].copy(), np.array([float(c)]) if c else None)
        net, b = Net.from_layers([(W, b), last]), X
    if net is not None:
        X = _f64(b if X is None else X, "X", 2)
        idx = list(range(X.shape[0])) if indices is None else [int(i) for i in indices]
        bounds = None
        if box is not None:
            lo, hi = box
            d = X.shape[1]
            bounds = (np.broadcast_to(np.asarray(lo, dtype=np.float64), (d,)).copy(),
                      np.broadcast_to(np.asarray(hi, dtype=np.float64), (d,)).copy())
        labels = None if y is None else _f64(y, "y", 1)
        out = _native.distance_deep_json(net.layers, X, labels, idx, time_limit, max_nodes, threads, bounds,
                                         None if target is None else int(target))
        return json.loads(out)
    W, b, v = _net(W, b, v)
    X = _f64(X, "X", 2)
    if y is None:
        out = X @ W.T + b
        f = np.maximum(out, 0.0) @ v + c
        y = np.where(f >= 0, 1.0, -1.0)
    idx = list(range(X.shape[0])) if indices is None else [int(i) for i in indices]
    out = _native.distance_json(W, b, v, float(c), X, _f64(y, "y", 1), idx, time_limit, max_nodes, threads)
    return json.loads(out)


def polish(W, b=None, v=None, X=None, y=None, tol=1e-4, act_tol=1e-4, mode="near", proximal=1.0,
           iterations=100_000, time_limit=None, stop_when_certified=False):
    """Polish toward a certified KKT point: (W, b, v, report) with the report
    of ``kktcert polish --json``. ``mode="near"`` finds one close to the
    given net (the one GD is heading for); ``"sparse"`` has no pull. The
    polish stops after ``iterations`` L-BFGS iterations (the same point on
    any machine), or after ``time_limit`` seconds if given.

    ``polish(net, X, y)`` with a :class:`Net` or a torch ``nn.Sequential``
    of any depth returns ``(Net, report)``: an augmented Lagrangian judged
    by the deep certificate each round (``tol``, ``act_tol``, ``iterations``
    apply; the two-layer options do not)."""
    net = _as_net(W)
    if net is not None:
        X, y = (X, y) if X is not None else (b, v)
        layers, rep = _native.polish_deep_json(net.layers, _f64(X, "X", 2), _f64(y, "y", 1), float(tol),
                                               float(act_tol), int(iterations))
        return Net(layers), json.loads(rep)
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
