"""The run, report and compare verbs as a user types them."""

from __future__ import annotations

import json

import pytest

from cli import main
from tests.conftest import TINY


def _argv(run_dir) -> list[str]:
    return ["run", TINY["source"], "--run", str(run_dir), "--quick", "--device", "cpu", "--size", str(TINY["size"]),
            "--z-dim", str(TINY["z_dim"]), "--epochs", str(TINY["epochs"]), "--batch-size", str(TINY["batch_size"]),
            "--k", str(TINY["k"]), "--tsne-n", str(TINY["tsne_n"]), "--compare-n", str(TINY["compare_n"]),
            "--facemap-n", str(TINY["facemap_n"])]


@pytest.mark.slow  # needs finished_run: every stage once
def test_run_again_skips_every_stage_and_says_where_the_report_is(finished_run, capsys):
    assert main(["-q", *_argv(finished_run)]) == 0
    out = capsys.readouterr().out
    for stage in ("prepare", "train", "encode", "stats", "structure", "tsne", "compare", "facemap", "report"):
        assert f"  {stage:<10} skipped" in out
    assert f"report: {finished_run / 'report' / 'index.html'}" in out


@pytest.mark.slow  # needs finished_run: every stage once
def test_report_verb_prints_what_went_in(finished_run, capsys):
    assert main(["-q", "report", "--run", str(finished_run)]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["missing_stages"] == [] and res["missing_figures"] == [] and res["figures"] >= 20


def test_missing_run_is_a_one_line_error(tmp_path, capsys):
    assert main(["compare", "--run", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("zspace compare: error:") and "does not exist" in err[-1]
    assert main(["report", "--run", str(tmp_path / "nope")]) == 2
