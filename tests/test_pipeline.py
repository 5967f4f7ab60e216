"""zspace run: every stage in order; finished stages skipped, changed ones rerun, interrupted ones resumed."""

from __future__ import annotations

import json

import numpy as np
import pytest

import engine.pipeline
from engine.latents.store import open_latents
from engine.model.checkpoint import load_checkpoint
from engine.pipeline import OUTPUTS, STAGES, profile_for, run, stage_keys
from tests.conftest import TINY


def _state(path):
    return json.loads((path / "pipeline.json").read_text())["stages"]


@pytest.mark.slow  # the session's finished_run: every stage once
def test_every_stage_runs_and_leaves_its_output(finished_run):
    state = _state(finished_run)
    assert list(state) == list(STAGES)
    for name in STAGES:
        assert state[name]["finished"] and (finished_run / OUTPUTS[name]).exists(), name
    z = open_latents(finished_run)["z"][:]
    assert z.shape == (240, 16) and np.isfinite(z).all()
    compare = json.loads((finished_run / "generate" / "compare.json").read_text())
    assert compare["n"] == 40 and len(compare["samplers"]) == 8
    assert json.loads((finished_run / "tsne" / "tsne.json").read_text())["n"] == 200
    assert json.loads((finished_run / "structure" / "structure.json").read_text())["k"] == 8


def test_a_changed_option_reruns_that_stage_and_the_later_ones_only():
    base = stage_keys(profile_for(True, **TINY))
    changed = stage_keys(profile_for(True, **{**TINY, "tsne_n": 150}))
    same = [s for s in STAGES if base[s] == changed[s]]
    assert same == ["prepare", "train", "encode", "stats", "structure"]
    retrain = stage_keys(profile_for(True, **{**TINY, "epochs": 2}))
    assert [s for s in STAGES if base[s] == retrain[s]] == ["prepare"]


@pytest.mark.slow  # three runs of the tiny pipeline
def test_skip_rerun_and_resume(tmp_path, caplog, monkeypatch):
    opts = dict(quick=True, device="cpu", progress=False, **TINY)
    run(tmp_path, until="stats", **opts)
    _, first = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    stats_before = (tmp_path / "stats" / "stats.json").stat().st_mtime_ns

    # interrupted in compare: the earlier stages are recorded, compare is not
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(engine.pipeline, "compare", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, **opts)
    state = _state(tmp_path)
    assert state["tsne"]["finished"] and state["compare"]["finished"] is None
    monkeypatch.undo()

    caplog.set_level("INFO")
    out = run(tmp_path, **opts)
    assert out["seconds"]["prepare"] == out["seconds"]["stats"] == out["seconds"]["tsne"] == "skipped"
    assert isinstance(out["seconds"]["compare"], float) and "compare   resuming" in caplog.text
    assert (tmp_path / "stats" / "stats.json").stat().st_mtime_ns == stats_before, "stats was not recomputed"
    _, again = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert again["epoch"] == first["epoch"] == 1

    # a changed training option retrains from scratch and redoes everything after it
    out = run(tmp_path, **{**opts, "epochs": 2})
    assert out["seconds"]["prepare"] == "skipped"
    assert all(isinstance(out["seconds"][s], float) for s in STAGES[1:])
    _, retrained = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert retrained["epoch"] == 2
    assert open_latents(tmp_path).attrs["checkpoint_epoch"] == 2, "latents come from the new model"
    assert out["report"] and (tmp_path / "report" / "index.html").exists()


def test_run_rejects_unknown_stage(tmp_path):
    with pytest.raises(ValueError, match="until must be one of"):
        run(tmp_path, until="plot")


def test_an_attrs_file_keys_the_attributes_stage_and_a_missing_one_is_named_before_any_write(tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text(",Smiling\n000001.jpg,1\n")
    base, named = stage_keys(profile_for()), stage_keys(profile_for(attrs=str(labels)))
    changed = [s for s in STAGES if base[s] != named[s]]
    assert changed == list(STAGES[STAGES.index("attributes"):]), changed
    labels.write_text(",Smiling\n000001.jpg,0\n")  # the same file, edited: the stage runs again
    assert stage_keys(profile_for(attrs=str(labels)))["attributes"] != named["attributes"]
    with pytest.raises(FileNotFoundError, match="--attrs .*nowhere.csv: no such file"):
        run(tmp_path / "run", attrs=str(tmp_path / "nowhere.csv"), **TINY)
    assert not (tmp_path / "run").exists()
