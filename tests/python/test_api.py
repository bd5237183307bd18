"""Each function of the Python package returns what the CLI writes for the
same files (wall-clock fields aside), and refuses bad input as the CLI does."""

import json

import numpy as np
import pytest

import kktcert
from conftest import FIXTURES, load_dataset, strip_timing

TINY = FIXTURES / "tiny"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cli):
    d = tmp_path_factory.mktemp("net")
    net = d / "net.safetensors"
    cli("train", "--data", TINY / "train.safetensors", "--width", 8, "--out", net)
    return net


def test_certify_matches_cli(tmp_path, cli, trained):
    X, y = load_dataset(TINY / "train.safetensors")
    W, b, v = kktcert.load_net(trained)
    for norm in ["l2", "both"]:
        out = tmp_path / f"cert-{norm}.json"
        cli("certify", "--net", trained, "--data", TINY / "train.safetensors", "--norm", norm, "--json", out)
        # Fortran order and float64: the package normalises memory order exactly.
        got = kktcert.certify(np.asfortranarray(W), b, v, np.asfortranarray(X), y, norm=norm)
        assert strip_timing(got) == strip_timing(json.loads(out.read_text()))
    # The working-set method through both front ends: the same JSON, and the
    # full Gram's bracket to 1e-9 relative.
    out = tmp_path / "cert-ws.json"
    cli("certify", "--net", trained, "--data", TINY / "train.safetensors", "--method", "working-set", "--json", out)
    ws = kktcert.certify(W, b, v, X, y, method="working-set")
    assert strip_timing(ws) == strip_timing(json.loads(out.read_text()))
    assert ws["working_set"]["converged"]
    full = kktcert.certify(W, b, v, X, y, method="full")
    assert "working_set" not in full
    for key in ["lower", "upper"]:
        assert abs(ws[key] - full[key]) <= 1e-9 * full["upper"]
    with pytest.raises(ValueError, match="expected auto, full or working-set"):
        kktcert.certify(W, b, v, X, y, method="gram")


def test_distance_matches_cli(tmp_path, cli, trained):
    X, y = load_dataset(TINY / "test.safetensors")
    out = tmp_path / "dist.json"
    cli("distance", "--net", trained, "--data", TINY / "test.safetensors", "--indices", "0:5", "--json", out)
    W, b, v = kktcert.load_net(trained)
    got = kktcert.distance(W, b, v, X, range(5), y=y)
    assert strip_timing(got) == strip_timing(json.loads(out.read_text())["points"])
    assert all(p["status"] == "exact" for p in got)


def test_polish_matches_cli(tmp_path, cli, trained):
    X, y = load_dataset(TINY / "train.safetensors")
    out, rep = tmp_path / "pol.safetensors", tmp_path / "pol.json"
    cli("polish", "--net", trained, "--data", TINY / "train.safetensors", "--out", out, "--stop-when-certified", "--json", rep)
    W, b, v = kktcert.load_net(trained)
    W2, b2, v2, report = kktcert.polish(W, b, v, X, y, stop_when_certified=True)
    Wc, bc, vc = kktcert.load_net(out)
    np.testing.assert_array_equal(W2, Wc)
    np.testing.assert_array_equal(v2, vc)
    assert strip_timing(report) == strip_timing(json.loads(rep.read_text()))
    assert report["certificate"]["verdict"] == "kkt"


def test_attack_matches_cli(tmp_path, cli, trained):
    from safetensors.numpy import load_file

    means = load_file(str(TINY / "means.safetensors"))
    X, y = load_dataset(TINY / "test.safetensors")
    out = tmp_path / "att.json"
    cli("attack", "--net", trained, "--fixture", TINY, "--json", out)
    W, b, v = kktcert.load_net(trained)
    got = kktcert.attack(W, b, v, means["mu"], means["labels"], X, y)
    assert got == json.loads(out.read_text())


def test_float32_input_is_widened_exactly(trained):
    X, y = load_dataset(TINY / "train.safetensors")
    W, b, v = kktcert.load_net(trained)
    a = kktcert.certify(W.astype(np.float32), b.astype(np.float32), v.astype(np.float32), X, y)
    w32 = [t.astype(np.float32).astype(np.float64) for t in (W, b, v)]
    bb = kktcert.certify(*w32, X, y)
    assert strip_timing(a) == strip_timing(bb)


def test_bad_input_raises_value_error_with_the_cli_message(tmp_path, cli, trained):
    X, y = load_dataset(TINY / "train.safetensors")
    W, b, v = kktcert.load_net(trained)
    with pytest.raises(ValueError, match=r"mismatch: network input dimension d = \d+ but data has d = \d+"):
        kktcert.certify(W, b, v, X[:, :-1], y)
    bad = y.copy()
    bad[0] = 0.5
    with pytest.raises(ValueError, match="label 0.5 at index 0, expected \\+1 or -1"):
        kktcert.certify(W, b, v, X, bad)
    with pytest.raises(ValueError, match="norm"):
        kktcert.certify(W, b, v, X, y, norm="l3")
    r = cli("certify", "--net", trained, "--data", TINY / "train.safetensors", "--norm", "l3", check=False)
    assert r.returncode == 2 and "possible values: l2, linf, both" in r.stderr and len(r.stderr.strip().splitlines()) == 1
