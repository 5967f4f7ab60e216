"""zspace contrast: runs of the same latents hold everywhere; a planted difference differs on its row only."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from engine.analysis.config import StructureConfig
from engine.analysis.stats import compute_stats
from engine.analysis.structure import compute_structure
from engine.contrast.page import contrast
from engine.contrast.rows import TOLERANCE, judge
from engine.latents.importer import import_latents


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two runs holding the same 1,500 x 16 latents (three of them dominant), with stats and structure."""
    root = tmp_path_factory.mktemp("contrast")
    rng = np.random.default_rng(0)
    z = rng.standard_normal((1500, 16)).astype(np.float32)
    z[:, :3] = z[:, :3] * 4 + 6
    np.save(root / "z.npy", z)
    runs = []
    for name in ("a", "b"):
        run = root / name
        import_latents(root / "z.npy", run, progress=False)
        compute_stats(run, progress=False)
        compute_structure(run, StructureConfig(k=8, graph_k=8, void_probes=500, bootstrap=20), progress=False)
        runs.append(run)
    return runs


def test_runs_of_the_same_latents_hold_on_every_row(two_runs, tmp_path):
    res = contrast(two_runs, tmp_path / "out")
    judged = {r["row"]: r["verdict"] for r in res["rows"] if r["verdict"] in ("holds", "differs")}
    assert not res["differs"] and len(judged) >= 15, judged  # 4 stats rows beside the shell, 10 structure rows
    assert "dominant components (count)" in res["holds"]
    dom = next(r for r in res["rows"] if r["row"] == "dominant components (count)")
    assert [c["value"] for c in dom["cells"]] == ["3", "3"]
    # stages that never ran are 'not run' in each run, and not judged
    face = next(r for r in res["rows"] if r["row"] == "face map: what explains non-faces")
    assert face["cells"] == [None, None] and face["verdict"] == "-"
    fam = next(r for r in res["rows"] if r["row"] == "family")
    assert fam["verdict"] == "setting" and [c["value"] for c in fam["cells"]] == ["imported", "imported"]
    for name in ("contrast.md", "contrast.json", "index.html"):
        assert (tmp_path / "out" / name).stat().st_size > 500
    page = (tmp_path / "out" / "index.html").read_text()
    assert page.count('<img src="figures/run') == 4  # radius and dominant of both runs; compare and facemap not run
    assert "not run" in page
    assert json.loads((tmp_path / "out" / "contrast.json").read_text())["labels"] == ["a", "b"]


def test_one_more_dominant_component_differs_on_that_row_only(two_runs, tmp_path):
    planted = tmp_path / "c"
    shutil.copytree(two_runs[1], planted)
    path = planted / "stats" / "stats.json"
    st = json.loads(path.read_text())
    st["dominant"] = st["dominant"] + [7]
    path.write_text(json.dumps(st))
    res = contrast([two_runs[0], planted], tmp_path / "out")
    assert res["differs"] == ["dominant components (count)"], res["differs"]
    # a third run: judged across all three, the planted one still decides
    res = contrast([*two_runs, planted], tmp_path / "out3")
    assert res["differs"] == ["dominant components (count)"] and res["labels"] == ["a", "b", "c"]


def test_the_rule_on_intervals_verdicts_and_numbers():
    iv = lambda lo, hi: {"kind": "interval", "x": (lo + hi) / 2, "lo": lo, "hi": hi, "value": ""}  # noqa: E731
    assert judge([iv(0.2, 0.5), iv(0.45, 0.7), iv(0.3, 0.46)]) == "holds"  # all share 0.45-0.46
    assert judge([iv(0.2, 0.5), iv(0.45, 0.7), iv(0.55, 0.8)]) == "differs"  # pairwise overlap is not enough
    v = lambda key: {"kind": "verdict", "key": key, "value": str(key)}  # noqa: E731
    assert judge([v("higher"), v("higher")]) == "holds" and judge([v("higher"), v("lower")]) == "differs"
    n = lambda x: {"kind": "number", "x": x, "value": str(x)}  # noqa: E731
    assert judge([n(1.0), n(1.0 - TOLERANCE + 1e-9)]) == "holds" and judge([n(1.0), n(0.85)]) == "differs"
    assert judge([n(1.0), None]) == "-" and judge([None, None]) == "-"
    assert judge([{"kind": "setting", "value": "ae"}, {"kind": "setting", "value": "vae"}]) == "setting"


def test_bad_calls_are_clear_errors(two_runs, tmp_path):
    with pytest.raises(ValueError, match="at least two runs"):
        contrast(two_runs[:1], tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="nowhere does not exist"):
        contrast([two_runs[0], tmp_path / "nowhere"], tmp_path / "out")
    with pytest.raises(ValueError, match="named twice"):
        contrast([two_runs[0], two_runs[0]], tmp_path / "out")
    with pytest.raises(ValueError, match="is one of the runs"):
        contrast(two_runs, two_runs[0])
    busy = tmp_path / "busy"
    (busy / "figures").mkdir(parents=True)
    (busy / "figures" / "mine.png").write_bytes(b"not the contrast's")
    with pytest.raises(ValueError, match="holds files that no contrast wrote"):
        contrast(two_runs, busy)
    assert (busy / "figures" / "mine.png").exists()
    contrast(two_runs, tmp_path / "again")
    contrast(two_runs, tmp_path / "again")  # a contrast's own folder is replaced
    empty = [tmp_path / "e1", tmp_path / "e2"]
    for e in empty:
        e.mkdir()
    with pytest.raises(ValueError, match="none of the runs has stats or compare"):
        contrast(empty, tmp_path / "out")
