"""PyTorch state dicts and ONNX exports load as the same network."""

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import kktcert
from conftest import FIXTURES, bf16_bits, bf16_values, forward, write_safetensors

RNG = np.random.default_rng(7)
D, M = 12, 9


def random_net(dtype=np.float64):
    W = RNG.normal(size=(M, D)).astype(dtype)
    b = RNG.normal(size=M).astype(dtype)
    v = RNG.normal(size=M).astype(dtype)
    return W, b, v


@pytest.mark.parametrize(
    "names",
    [
        ("0.weight", "0.bias", "2.weight"),  # nn.Sequential
        ("fc1.weight", "fc1.bias", "fc2.weight"),  # named modules
        ("model.net.2.weight", "model.net.2.bias", "model.net.10.weight"),  # natural order: 2 < 10
    ],
)
@pytest.mark.parametrize("dtype", ["F64", "F32", "F16", "BF16"])
def test_pytorch_state_dict_loads_exactly(tmp_path, cli, names, dtype):
    W, b, v = random_net()
    tensors = {names[0]: (dtype, W), names[1]: (dtype, b), names[2]: (dtype, v[None, :])}
    p = tmp_path / "net.safetensors"
    write_safetensors(p, tensors)
    W2, b2, v2 = kktcert.load_net(p)
    widen = {
        "F64": lambda a: a,
        "F32": lambda a: a.astype(np.float32).astype(np.float64),
        "F16": lambda a: a.astype(np.float16).astype(np.float64),
        "BF16": lambda a: bf16_values(bf16_bits(a)),
    }[dtype]
    np.testing.assert_array_equal(W2, widen(W))
    np.testing.assert_array_equal(b2, widen(b))
    np.testing.assert_array_equal(v2, widen(v))
    # The CLI computes the same function: its minimum margin agrees with a NumPy forward pass.
    X = RNG.normal(size=(30, D))
    y = np.where(RNG.random(30) < 0.5, -1.0, 1.0)
    data = tmp_path / "data.safetensors"
    write_safetensors(data, {"X": ("F64", X), "y": ("F64", y)})
    out = tmp_path / "eval.json"
    cli("eval", "--net", p, "--data", data, "--json", out)
    q = y * forward(widen(W), widen(b), widen(v), X)
    assert abs(json.loads(out.read_text())["min_margin"] - q.min()) <= 1e-12 * max(1.0, abs(q.min()))


def test_output_bias_is_kept_and_refused_by_certify(tmp_path, cli):
    W, b, v = random_net()
    c = 0.375
    p = tmp_path / "net.safetensors"
    write_safetensors(p, {"0.weight": ("F32", W), "0.bias": ("F32", b), "2.weight": ("F32", v[None]), "2.bias": ("F32", np.array([c]))})
    W2, b2, v2, c2 = kktcert.load_net(p, with_bias=True)
    assert c2 == c
    with pytest.raises(ValueError, match="output bias"):
        kktcert.load_net(p)
    X = RNG.normal(size=(20, D))
    f = forward(W2, b2, v2, X, c)
    y = np.where(f >= 0, 1.0, -1.0)
    data = tmp_path / "data.safetensors"
    write_safetensors(data, {"X": ("F64", X), "y": ("F64", y)})
    out = tmp_path / "eval.json"
    cli("eval", "--net", p, "--data", data, "--json", out)
    assert abs(json.loads(out.read_text())["min_margin"] - (y * f).min()) <= 1e-12
    r = cli("certify", "--net", p, "--data", data, check=False)
    assert r.returncode == 2 and "output bias" in r.stderr and "Problem (2)" in r.stderr
    # distance handles N(x) + c exactly: every witness flips the biased net.
    pts = kktcert.distance(W2, b2, v2, X[:4], y=y[:4], c=c2, time_limit=20)
    for pt in pts:
        assert pt["status"] == "exact", pt
        w = np.array(pt["witness"])
        assert y[pt["index"]] * forward(W2, b2, v2, w[None], c)[0] <= 1e-9


def test_explicit_tensor_names_and_helpful_error(tmp_path, cli):
    W, b, v = random_net()
    p = tmp_path / "net.safetensors"
    write_safetensors(p, {"enc.weight": ("F64", W), "enc.bias": ("F64", b), "head": ("F64", v), "extra": ("F64", v)})
    r = cli("eval", "--net", p, "--data", FIXTURES / "tiny" / "train.safetensors", check=False)
    assert r.returncode == 2
    assert "enc.weight [9, 12] F64" in r.stderr and "--tensors" in r.stderr
    W2, b2, v2 = kktcert.load_net(p, tensors="W=enc.weight,b=enc.bias,v=head")
    np.testing.assert_array_equal(W2, W)
    np.testing.assert_array_equal(v2, v)


def onnx_model(W, b, v, c, style, dtype=TensorProto.FLOAT):
    np_t = np.float32 if dtype == TensorProto.FLOAT else np.float64
    init = []
    nodes = []
    x = "input"
    if style == "matmul":
        nodes.append(helper.make_node("Flatten", ["input"], ["flat"], axis=1))
        x = "flat"
        init += [numpy_helper.from_array(W.T.astype(np_t), "W1t"), numpy_helper.from_array(b.astype(np_t), "b1")]
        nodes += [helper.make_node("MatMul", [x, "W1t"], ["u0"]), helper.make_node("Add", ["u0", "b1"], ["u"])]
        nodes.append(helper.make_node("Relu", ["u"], ["h"]))
        init += [numpy_helper.from_array(v[:, None].astype(np_t), "v"), numpy_helper.from_array(np.array([c], dtype=np_t), "c")]
        nodes += [helper.make_node("MatMul", ["h", "v"], ["o0"]), helper.make_node("Add", ["o0", "c"], ["output"])]
    else:  # what torch.onnx.export writes for nn.Linear: Gemm with transB = 1
        init += [numpy_helper.from_array(W.astype(np_t), "fc1.weight"), numpy_helper.from_array(b.astype(np_t), "fc1.bias")]
        init += [numpy_helper.from_array(v[None].astype(np_t), "fc2.weight"), numpy_helper.from_array(np.array([c], dtype=np_t), "fc2.bias")]
        nodes += [
            helper.make_node("Gemm", ["input", "fc1.weight", "fc1.bias"], ["u"], transB=1),
            helper.make_node("Relu", ["u"], ["h"]),
            helper.make_node("Gemm", ["h", "fc2.weight", "fc2.bias"], ["output"], transB=1),
        ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("input", dtype, ["batch", W.shape[1]])],
        [helper.make_tensor_value_info("output", dtype, ["batch", 1])],
        init,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


@pytest.mark.parametrize("style", ["gemm", "matmul"])
@pytest.mark.parametrize("dtype", [TensorProto.FLOAT, TensorProto.DOUBLE])
def test_onnx_export_loads_as_the_same_net(tmp_path, cli, style, dtype):
    W, b, v = random_net()
    c = -0.25
    p = tmp_path / "net.onnx"
    onnx.save(onnx_model(W, b, v, c, style, dtype), str(p))
    W2, b2, v2, c2 = kktcert.load_net(p, with_bias=True)
    np_t = np.float32 if dtype == TensorProto.FLOAT else np.float64
    X = RNG.normal(size=(25, D))
    want = forward(W.astype(np_t).astype(np.float64), b.astype(np_t).astype(np.float64), v.astype(np_t).astype(np.float64), X, float(np_t(c)))
    np.testing.assert_allclose(forward(W2, b2, v2, X, c2), want, rtol=0, atol=1e-12)
    y = np.where(want >= 0, 1.0, -1.0)
    data = tmp_path / "data.safetensors"
    write_safetensors(data, {"X": ("F64", X), "y": ("F64", y)})
    out = tmp_path / "eval.json"
    cli("eval", "--net", p, "--data", data, "--json", out)
    assert abs(json.loads(out.read_text())["min_margin"] - (y * want).min()) <= 1e-12


def test_onnx_other_graph_is_refused_with_its_operators(tmp_path, cli):
    W, b, v = random_net()
    model = onnx_model(W, b, v, 0.0, "gemm")
    model.graph.node[1].op_type = "Sigmoid"
    p = tmp_path / "net.onnx"
    onnx.save(model, str(p))
    r = cli("eval", "--net", p, "--data", FIXTURES / "tiny" / "train.safetensors", check=False)
    assert r.returncode == 2
    assert "Gemm, Sigmoid, Gemm" in r.stderr and "unsupported operator Sigmoid" in r.stderr
