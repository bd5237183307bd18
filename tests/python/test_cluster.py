"""The Dask driver on a local cluster of two workers: merged equals unsharded."""

import json

import pytest

from conftest import FIXTURES, ROOT, strip_timing

pytest.importorskip("dask.distributed", reason="dask[distributed] is needed for the cluster driver")


def kktcert_bin():
    import os

    return os.environ.get("KKTCERT_BIN", str(ROOT / "target" / "release" / "kktcert"))


def test_distance_on_a_local_dask_cluster(tmp_path, cli):
    from kktcert.cluster import run

    net = tmp_path / "net.safetensors"
    cli("train", "--data", FIXTURES / "small" / "train.safetensors", "--width", 12, "--out", net)
    job = ["distance", "--net", str(net), "--data", str(FIXTURES / "small" / "test.safetensors"), "--indices", "0:6", "--threads", "1"]
    whole = tmp_path / "whole.json"
    cli(*job, "--json", whole)
    merged = run(job, 3, tmp_path / "merged.json", kktcert=kktcert_bin(), local_workers=2)
    assert strip_timing(json.loads(merged.read_text())) == strip_timing(json.loads(whole.read_text()))


def test_reproduce_quick_on_a_local_dask_cluster(tmp_path, cli):
    from kktcert.cluster import run

    whole = tmp_path / "whole"
    cli("reproduce", "--quick", "--out", whole)
    merged = run(["reproduce", "--quick"], 4, tmp_path / "merged", kktcert=kktcert_bin(), local_workers=2)
    a = strip_timing(json.loads((merged / "report.json").read_text()))
    b = strip_timing(json.loads((whole / "report.json").read_text()))
    assert a == b
    for fig in ["flip_rate.svg", "critical_vs_scale.svg", "distance_hist.svg"]:
        assert (merged / "figures" / fig).read_bytes() == (whole / "figures" / fig).read_bytes(), fig
    md = lambda p: [l for l in (p / "report.md").read_text().splitlines() if "Run time" not in l]
    assert md(merged) == md(whole)
