"""Deep and multi-class ReLU nets: ONNX graphs of any depth, PyTorch models
(state dicts, both ONNX exporters, ``Net.from_torch``), and ``eval``'s
margins, each against a NumPy or torch forward pass."""

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import kktcert
from conftest import write_safetensors

RNG = np.random.default_rng(11)
WIDTHS = [12, 20, 16, 10, 10]  # d = 12, three hidden layers, 10 classes


def random_layers(widths=WIDTHS, biases=(True, False, False, False)):
    return [(RNG.normal(size=(o, i)) / np.sqrt(i), RNG.normal(size=o) * 0.3 if has else None)
            for i, o, has in zip(widths[:-1], widths[1:], biases)]


def numpy_forward(layers, X):
    h = X
    for i, (W, b) in enumerate(layers):
        h = h @ W.T + (0.0 if b is None else b)
        if i + 1 < len(layers):
            h = np.maximum(h, 0.0)
    return h


def margins(F, y):
    rival = np.where(np.arange(F.shape[1])[None, :] == y[:, None], -np.inf, F).max(axis=1)
    return F[np.arange(len(y)), y] - rival


def deep_onnx(layers, style, dtype=TensorProto.DOUBLE):
    """A graph as torch.onnx.export writes nn.Linear (Gemm, transB = 1) or as
    the dynamo exporter and hand-written graphs do (MatMul + Add)."""
    np_t = np.float64 if dtype == TensorProto.DOUBLE else np.float32
    nodes, init, x = [helper.make_node("Flatten", ["input"], ["h0"], axis=1)], [], "h0"
    for i, (W, b) in enumerate(layers):
        out = "output" if i + 1 == len(layers) else f"h{i + 1}"
        pre = f"u{i}" if i + 1 < len(layers) else out
        if style == "gemm":
            init.append(numpy_helper.from_array(W.astype(np_t), f"{2 * i}.weight"))
            inputs = [x, f"{2 * i}.weight"]
            if b is not None:
                init.append(numpy_helper.from_array(b.astype(np_t), f"{2 * i}.bias"))
                inputs.append(f"{2 * i}.bias")
            nodes.append(helper.make_node("Gemm", inputs, [pre], transB=1))
        else:
            init.append(numpy_helper.from_array(W.T.astype(np_t), f"Wt{i}"))
            mm = f"m{i}" if b is not None else pre
            nodes.append(helper.make_node("MatMul", [x, f"Wt{i}"], [mm]))
            if b is not None:
                init.append(numpy_helper.from_array(b.astype(np_t), f"b{i}"))
                nodes.append(helper.make_node("Add", [mm, f"b{i}"], [pre]))
        if i + 1 < len(layers):
            nodes.append(helper.make_node("Relu", [pre], [out]))
        x = out
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info("input", dtype, ["batch", layers[0][0].shape[1]])],
        [helper.make_tensor_value_info("output", dtype, ["batch", layers[-1][0].shape[0]])],
        init,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def eval_cli(cli, tmp_path, net_path, X, y):
    data = tmp_path / "data.safetensors"
    write_safetensors(data, {"X": ("F64", X), "y": ("I64", y.astype(np.int64))})
    out = tmp_path / "eval.json"
    cli("eval", "--net", net_path, "--data", data, "--json", out)
    return json.loads(out.read_text())


@pytest.mark.parametrize("style", ["gemm", "matmul"])
def test_a_deep_onnx_graph_loads_as_the_same_net(tmp_path, cli, style):
    layers = random_layers()
    p = tmp_path / "net.onnx"
    onnx.save(deep_onnx(layers, style), str(p))
    net = kktcert.load(p)
    assert net.hidden_layers == 3 and net.homogeneous
    for (W, b), (W2, b2) in zip(layers, net.layers):
        np.testing.assert_array_equal(W2, W)
        assert (b is None and b2 is None) or np.array_equal(b, b2)
    X = RNG.normal(size=(50, WIDTHS[0]))
    F = numpy_forward(layers, X)
    np.testing.assert_allclose(net.forward(X), F, rtol=0, atol=1e-12)
    y = RNG.integers(0, WIDTHS[-1], size=50)
    e = eval_cli(cli, tmp_path, p, X, y)
    np.testing.assert_allclose(e["margins"], margins(F, y), rtol=0, atol=1e-12)
    assert e["errors"] == int((margins(F, y) <= 0).sum())


def test_a_deep_state_dict_round_trips_through_net_save(tmp_path, cli):
    layers = random_layers(biases=(True, True, False, True))
    net = kktcert.Net.from_layers(layers)
    assert not net.homogeneous
    p = tmp_path / "net.safetensors"
    net.save(p)
    back = kktcert.load(p)
    X = RNG.normal(size=(20, WIDTHS[0]))
    np.testing.assert_array_equal(back.forward(X), net.forward(X))
    e = eval_cli(cli, tmp_path, p, X, RNG.integers(0, 10, size=20))
    assert e["homogeneity"] == {"not_homogeneous": {"layer": 2}} and e["normalized_margin"] is None


def test_layers_that_do_not_chain_are_refused():
    W1, W2 = RNG.normal(size=(5, 3)), RNG.normal(size=(2, 4))
    with pytest.raises(ValueError, match="takes 4 inputs but layer 0 has 5 outputs"):
        kktcert.Net.from_layers([(W1, None), (W2, None)])


def test_an_onnx_graph_with_two_linear_maps_in_a_row_is_refused(tmp_path, cli):
    layers = random_layers()
    model = deep_onnx(layers, "gemm")
    relus = [n for n in model.graph.node if n.op_type == "Relu"]
    relus[1].op_type = "Identity"
    p = tmp_path / "net.onnx"
    onnx.save(model, str(p))
    with pytest.raises(ValueError, match="two linear layers without a ReLU between them"):
        kktcert.load(p)


# ---- real PyTorch: runs where torch imports (pip's CPU wheel), skipped elsewhere ----


def torch_mlp(torch, widths, bias_after_first=False, seed=0):
    torch.manual_seed(seed)
    mods = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        mods.append(torch.nn.Linear(a, b, bias=(i == 0) or bias_after_first))
        if i + 2 < len(widths):
            mods.append(torch.nn.ReLU())
    return torch.nn.Sequential(torch.nn.Flatten(), *mods)


def trained(torch, model, X, y, steps=200):
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    Xt, yt = torch.tensor(X, dtype=torch.float32), torch.tensor(y)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(Xt), yt).backward()
        opt.step()
    return model


def test_a_trained_torch_mlp_is_the_same_net_by_every_route(tmp_path, cli):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    X = RNG.normal(size=(200, 64))
    y = RNG.integers(0, 10, size=200)
    model = trained(torch, torch_mlp(torch, [64, 50, 50, 10]), X, y)
    with torch.no_grad():
        want = model.double()(torch.tensor(X)).numpy()
    model = model.float()
    p = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(p))
    routes = {"state dict": kktcert.load(p), "from_torch": kktcert.Net.from_torch(model)}
    onnx_path = tmp_path / "model.onnx"
    torch.onnx.export(model, torch.zeros(1, 64), str(onnx_path), dynamo=False,
                      input_names=["input"], output_names=["output"],
                      dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    routes["onnx (TorchScript exporter)"] = kktcert.load(onnx_path)
    for name, net in routes.items():
        np.testing.assert_allclose(net.forward(X), want, rtol=0, atol=1e-12, err_msg=name)
    e = eval_cli(cli, tmp_path, p, X, y)
    np.testing.assert_allclose(e["margins"], margins(want, y), rtol=0, atol=1e-12)
    assert e["accuracy"] == pytest.approx(float((want.argmax(axis=1) == y).mean()), abs=0)


def test_the_dynamo_onnx_export_loads(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxscript")
    model = torch_mlp(torch, [64, 30, 30, 10])
    p = tmp_path / "dynamo.onnx"
    torch.onnx.export(model, (torch.zeros(4, 64),), str(p), dynamo=True, external_data=False)
    X = RNG.normal(size=(30, 64))
    with torch.no_grad():
        want = model.double()(torch.tensor(X)).numpy()
    np.testing.assert_allclose(kktcert.load(p).forward(X), want, rtol=0, atol=1e-12)


def test_from_torch_refuses_other_modules():
    torch = pytest.importorskip("torch")
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1))
    with pytest.raises(ValueError, match="module 1 \\(Tanh\\)"):
        kktcert.Net.from_torch(model)


# ---- the deep KKT certificate against SciPy's nnls on a NumPy Jacobian ----


def jacobian(layers, X, y, classes):
    """Rows: the constraints (i, j ≠ y_i) in kktcert's order; columns: θ flat
    (per layer W row-major, then b), by a backward pass written here."""
    rows, q = [], []
    for i, x in enumerate(X):
        hs, us = [x], []
        for W, b in layers[:-1]:
            us.append(W @ hs[-1] + (0 if b is None else b))
            hs.append(np.maximum(us[-1], 0))
        W, b = layers[-1]
        f = W @ hs[-1] + (0 if b is None else b)
        for j in ([None] if classes == 1 else [j for j in range(classes) if j != y[i]]):
            a = np.zeros(len(f))
            if j is None:
                a[0] = y[i]
            else:
                a[y[i]], a[j] = 1.0, -1.0
            q.append(a @ f)
            grads, delta = [], a
            for l in range(len(layers) - 1, -1, -1):
                if l < len(layers) - 1:
                    delta = delta * (us[l] > 0)
                grads.append(np.concatenate([np.outer(delta, hs[l]).ravel()] + ([delta] if layers[l][1] is not None else [])))
                delta = layers[l][0].T @ delta
            rows.append(np.concatenate(grads[::-1]))
    return np.array(rows), np.array(q)


@pytest.mark.parametrize("classes", [1, 4])
def test_the_deep_certificate_equals_nnls_on_the_same_jacobian(tmp_path, cli, classes):
    from scipy.optimize import nnls

    rng = np.random.default_rng(classes)
    d, n = 15, 50
    layers = [(rng.normal(size=(25, d)) / np.sqrt(d), rng.normal(size=25) * 0.1),
              (rng.normal(size=(20, 25)) / np.sqrt(25), None),
              (rng.normal(size=(classes, 20)) / np.sqrt(20), None)]
    net = kktcert.Net.from_layers(layers)
    X = rng.normal(size=(n, d))
    F = net.forward(X)
    y = np.where(F > 0, 1, -1) if classes == 1 else F.argmax(axis=1)
    G, q = jacobian(layers, X, y, classes)
    degree = len(layers)
    s = q.min() ** (-1.0 / degree)  # θ̂ = sθ, ∇q(θ̂) = s^(D-1) ∇q(θ)
    theta = np.concatenate([np.concatenate([W.ravel()] + ([] if b is None else [b])) for W, b in layers]) * s
    _, residual = nnls(G.T * s ** (degree - 1), theta, maxiter=100_000)
    cert = kktcert.certify(net, X, y, delta=float("inf"))
    assert cert["lower"] <= cert["upper"]
    assert abs(cert["upper"] - residual) <= 1e-9 * residual
    assert abs(cert["lower"] - residual) <= 1e-9 * residual
    # The CLI gives the same bracket from files.
    p, data, out = tmp_path / "net.safetensors", tmp_path / "data.safetensors", tmp_path / "c.json"
    net.save(p)
    write_safetensors(data, {"X": ("F64", X), "y": ("I64", y.astype(np.int64))})
    cli("certify", "--net", p, "--data", data, "--delta", "inf", "--json", out)
    assert json.loads(out.read_text())["upper"] == cert["upper"]


def test_a_gd_trained_torch_mlp_gets_a_sound_bracket(tmp_path):
    torch = pytest.importorskip("torch")
    X = RNG.normal(size=(100, 20))
    y = RNG.integers(0, 5, size=100)
    model = trained(torch, torch_mlp(torch, [20, 40, 40, 5]), X, y, steps=500)
    with torch.no_grad():  # certify against the labels the net fits
        y = model(torch.tensor(X, dtype=torch.float32)).argmax(dim=1).numpy()
    cert = kktcert.certify(model, X, y)
    assert 0 <= cert["lower"] <= cert["upper"] and cert["verdict"] in ("kkt", "not_kkt", "undecided")
    assert cert["degree"] == 3 and cert["constraints"] == 400


def test_polish_returns_a_net_whose_certificate_it_reports():
    rng = np.random.default_rng(5)
    layers = [(rng.normal(size=(12, 6)) / np.sqrt(6), None), (rng.normal(size=(12, 12)) / np.sqrt(12), None),
              (rng.normal(size=(3, 12)) / np.sqrt(12), None)]
    net = kktcert.Net.from_layers(layers)
    X = rng.normal(size=(30, 6))
    y = net.forward(X).argmax(axis=1)
    out, rep = kktcert.polish(net, X, y, iterations=5000)
    assert isinstance(out, kktcert.Net) and rep["train_agreement"] == 1.0
    assert (out.forward(X).argmax(axis=1) == y).all()
    again = kktcert.certify(out, X, y, act_tol=1e-4)
    assert again["upper"] == pytest.approx(rep["certificate"]["upper"], rel=1e-9)
    start = kktcert.certify(net, X, y, act_tol=1e-4)
    assert rep["certificate"]["relative_upper"] < start["relative_upper"]


def ldp(G, h):
    """min ||x|| s.t. G x >= h by Lawson-Hanson through SciPy's nnls; None if empty."""
    from scipy.optimize import nnls

    d = G.shape[1]
    E = np.vstack([G.T, h[None, :]])
    f = np.zeros(d + 1)
    f[d] = 1.0
    u, _ = nnls(E, f, maxiter=50 * E.shape[1])
    r = E @ u - f
    if r[d] >= -1e-12:
        return None
    x = -r[:d] / r[d]
    return x if np.all(G @ x - h >= -1e-9 * (1 + np.abs(h).max())) else None


def brute_distance(layers, x0, lo, hi):
    """The exact distance to a change of the predicted class inside [lo, hi]^d:
    one LDP per activation pattern and rival class (SciPy's nnls)."""
    d = len(x0)
    c = int(np.argmax(numpy_forward(layers, x0[None, :])[0]))
    n = sum(W.shape[0] for W, _ in layers[:-1])
    best = np.inf
    for mask in range(1 << n):
        rows, rhs, at = [], [], 0
        S, s = np.eye(d), x0.copy()
        for W, b in layers[:-1]:
            P, q = W @ S, W @ s + (0.0 if b is None else b)
            on = np.array([(mask >> (at + j)) & 1 for j in range(W.shape[0])], dtype=bool)
            sign = np.where(on, 1.0, -1.0)
            rows.append(sign[:, None] * P)
            rhs.append(-sign * q)
            S, s = P * on[:, None], q * on
            at += W.shape[0]
        W, b = layers[-1]
        F, f = W @ S, W @ s + (0.0 if b is None else b)
        box_rows = np.vstack([np.eye(d), -np.eye(d)])
        box_rhs = np.concatenate([lo - x0, x0 - hi])
        for j in range(W.shape[0]):
            if j == c:
                continue
            G = np.vstack(rows + [box_rows, (F[j] - F[c])[None, :]])
            h = np.concatenate(rhs + [box_rhs, [-(f[j] - f[c])]])
            x = ldp(G, h)
            if x is not None:
                best = min(best, np.linalg.norm(x))
    return best


def test_deep_distances_equal_brute_force_with_scipy():
    rng = np.random.default_rng(5)
    layers = [(rng.normal(size=(4, 3)), rng.normal(size=4) * 0.3),
              (rng.normal(size=(4, 4)), rng.normal(size=4) * 0.3),
              (rng.normal(size=(3, 4)), rng.normal(size=3) * 0.3)]
    net = kktcert.Net.from_layers(layers)
    X = rng.uniform(-1, 1, size=(8, 3))
    points = kktcert.distance(net, X, box=(-1.5, 1.5))
    for x, p in zip(X, points):
        truth = brute_distance(layers, x, np.full(3, -1.5), np.full(3, 1.5))
        assert p["status"] == "exact", p
        assert abs(p["upper"] - truth) <= 1e-7 * max(1.0, truth), (p["upper"], truth)
        assert p["lower"] <= truth + 1e-9
        w = np.array(p["witness"])
        f = numpy_forward(layers, w[None, :])[0]
        c = int(np.argmax(numpy_forward(layers, x[None, :])[0]))
        assert p["leaves"] == c and p["witness_class"] != c
        assert f[p["witness_class"]] >= f[c]


def test_deep_distance_from_torch_matches_the_net():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 10), torch.nn.ReLU(), torch.nn.Linear(10, 10), torch.nn.ReLU(),
                                torch.nn.Linear(10, 4)).double()
    X = np.random.default_rng(1).uniform(-1, 1, size=(6, 6))
    via_torch = kktcert.distance(model, X, box=(-4.0, 4.0))
    via_net = kktcert.distance(kktcert.Net.from_torch(model), X, box=(-4.0, 4.0))
    assert sum(p["status"] == "exact" for p in via_net) >= 3
    for a, b in zip(via_torch, via_net):
        assert a["status"] == b["status"] and a["status"] in ("exact", "no_flip")
        assert a["upper"] == b["upper"]
        if a["status"] == "no_flip":
            continue
        w = torch.tensor([a["witness"]], dtype=torch.float64)
        f = model(w)[0].detach().numpy()
        assert f[a["witness_class"]] >= f[a["leaves"]]
