"""`bench --small`: one results file with every stage, finite ratios and peak memory for every row."""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import pytest

from bench.harness import STAGES, main, run_bench
from bench.profile import SIZES

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-small")
    result = run_bench(small=True, out_dir=out)
    return out, result


@pytest.mark.slow  # the --small benchmark: about 2 minutes on 2 cores
def test_results_file_has_every_stage(small):
    out, result = small
    saved = json.loads((out / "results.json").read_text())
    assert saved["small"] is True
    groups = {r["group"] for r in saved["rows"]}
    assert groups == set(STAGES), f"stages without a row: {set(STAGES) - groups}"
    assert len(saved["rows"]) == len(result["rows"])


@pytest.mark.slow  # the --small benchmark: about 2 minutes on 2 cores
def test_every_row_is_finite(small):
    out, _ = small
    rows = json.loads((out / "results.json").read_text())["rows"]
    for r in rows:
        assert isinstance(r["ours_s"], float) and math.isfinite(r["ours_s"]) and r["ours_s"] > 0, r
        assert isinstance(r["peak_mb"], (int, float)) and math.isfinite(r["peak_mb"]) and r["peak_mb"] >= 0, r
        if r["baseline"] != "-":
            assert r["baseline_s"] is not None and math.isfinite(r["baseline_s"]) and r["baseline_s"] > 0, r
            assert r["ratio"] is not None and math.isfinite(r["ratio"]) and r["ratio"] > 0, r
        else:  # the end-to-end stats rows, the memory-read floor, structure's memory on Dask and the latent side
            # of the attributes stage have no baseline
            assert r["group"] in ("stats", "kernels", "dask_structure", "attributes", "explore"), r
            assert r["group"] != "kernels" or r["stage"] == "read_array", r
            assert r["group"] != "attributes" or r["stage"] == "attributes_latents", r
            assert r["baseline_s"] is None and r["ratio"] is None, r


@pytest.mark.slow  # the --small benchmark: about 2 minutes on 2 cores
def test_encode_sides_agree(small):
    """Both sides of the encode row ran the same images through the same weights."""
    _, result = small
    (row,) = [r for r in result["rows"] if r["stage"] == "encode"]
    assert row["extra"]["max_abs_dz"] < 1e-3


@pytest.mark.slow  # the --small benchmark: about 2 minutes on 2 cores
def test_results_md_and_machine(small):
    out, result = small
    md = (out / "RESULTS.md").read_text()
    info = result["machine"]
    table = [line for line in md.splitlines() if line.startswith("| ") and not line.startswith("| stage |")]
    assert len(table) == len(result["rows"])
    for r in result["rows"]:
        assert any(line.startswith(f"| {r['stage']} | {r['size']} |") for line in table), r["stage"]
    assert info["cpu"] and info["cpu"] in md
    assert "peak MB" in md and "fresh process" in md  # the column is defined above the table
    assert isinstance(info["cores"], int) and info["cores"] >= 1
    for pkg in ("numpy", "torch", "numba", "zarr"):
        assert info["versions"].get(pkg), pkg
        assert f"{pkg} {info['versions'][pkg]}" in md
    assert result["threads"] >= 1 and result["thread_pins"]["torch"] == result["threads"]


def test_unknown_stage_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="unknown bench stages"):
        run_bench(small=True, only=["prepare", "no_such_stage"], out_dir=tmp_path)
    assert not (tmp_path / "results.json").exists()
    with pytest.raises(SystemExit) as e:  # the CLI says so in one line, exit status 2
        main(["--small", "--only", "no_such_stage", "--out", str(tmp_path)])
    assert e.value.code == 2


def test_rows_kept_from_another_machine_are_named(tmp_path):
    """A partial run keeps the other stages' rows with the machine that measured them, and RESULTS.md says which."""
    from bench.results import Row, machine_label, merge_previous, results_markdown, row_to_json

    info = {"cpu": "Fast CPU", "cores": 2, "gpu": None, "cuda": None, "python": "3", "versions": {}}
    here = machine_label(info)
    old = Row("prepare", "6000 JPEGs", 4.0, 6.0, "ours", "PIL", "-", group="prepare",
              machine="Old CPU, 2 cores, no GPU")
    unlabelled = Row("encode", "6000 img", 6.0, 14.0, "ours", "PIL", "-", group="encode")
    saved = {"small": False, "rows": [row_to_json(old), row_to_json(unlabelled)]}
    (tmp_path / "results.json").write_text(json.dumps(saved))
    new = Row("stats_dask", "1M", 20.0, 19.0, "dask", "in process", "-", group="dask", machine=here)
    rows = merge_previous([new], tmp_path, False, ["dask"], ["prepare", "encode", "dask"])
    assert [(r.stage, r.machine) for r in rows] == [("prepare", old.machine), ("encode", ""), ("stats_dask", here)]
    md = results_markdown(rows, info, False, 2, {"torch": 2})
    assert f"Machine of this run: {here};" in md
    assert "on other machines (`--only` refreshed the rest): Old CPU, 2 cores, no GPU: prepare." in md
    assert "encode" not in md.split("| stage |")[0]  # a row without a machine is not said to be from another one
    assert "other machines" not in results_markdown([new], info, False, 2, {"torch": 2})


def _bench_modules():
    return {p.stem: ast.parse(p.read_text(), filename=str(p)) for p in sorted(BENCH.glob("*.py"))}


def test_functions_are_short():
    long = [f"{mod}.{n.name}: {n.end_lineno - n.lineno + 1} lines" for mod, tree in _bench_modules().items()
            for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
            and n.end_lineno - n.lineno + 1 > 80]
    assert not long, long


def test_no_private_names_across_modules():
    """A name another bench module needs is public; underscore names stay in their module."""
    bad = []
    for mod, tree in _bench_modules().items():
        for n in ast.walk(tree):
            if isinstance(n, ast.ImportFrom) and n.module and n.module.startswith("bench"):
                bad += [f"{mod}: {n.module}.{a.name}" for a in n.names if a.name.startswith("_")]
    assert not bad, bad


def test_stages_read_sizes_from_the_profile():
    """The small/full sizes live in bench.profile only: no stage branches on the profile itself."""
    assert set(SIZES) == {"full", "small"}
    for mod, tree in _bench_modules().items():
        if mod.startswith("stages"):
            names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
            keys = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)}
            assert "small" not in names and "small" not in keys, mod


def test_bench_stages_measure_stages_of_the_pipeline_table():
    from bench.stages import MEASURES, STAGES
    from engine.stages import STAGE_NAMES

    assert set(MEASURES) == set(STAGES)
    assert set(MEASURES.values()) <= set(STAGE_NAMES)
    # every computing stage before compare has a benchmark row
    assert {"prepare", "train", "encode", "stats", "structure", "tsne"} <= set(MEASURES.values())


@pytest.mark.slow  # the --scaling --small profile: about 2.5 minutes on 2 cores
def test_scaling_small_writes_table_figure_and_exponents(tmp_path):
    from bench.profile import scaling_sizes
    from bench.scaling import STAGE_LABELS, fitted_exponent
    from cli import main as zspace

    assert zspace(["bench", "--scaling", "--small", "--out", str(tmp_path)]) == 0  # as a user runs it
    result = json.loads((tmp_path / "scaling.json").read_text())
    sizes = scaling_sizes(True)
    points = result["points"]
    for p in points:
        assert math.isfinite(p["seconds"]) and p["seconds"] > 0 and p["peak_mb"] >= 0, p
    for stage in ("stats", "knn", "structure", "tsne"):
        ns = sorted(p["n"] for p in points if p["stage"] == stage)
        assert set(sizes.ns) <= set(ns), (stage, ns)
    # the all-points map reused structure's graph; the subsets computed theirs
    assert all(p["neighbours"].startswith("reused") for p in points if p["stage"] == "tsne")
    (base,) = [p for p in points if p["stage"] == "openTSNE_defaults"]
    assert base["n"] == max(sizes.ns) and 0 < base["kept"] <= 1 and base["kl"] > 0 and base["ours_kl"] > 0
    assert (tmp_path / "figures" / "scaling.png").stat().st_size > 10_000
    md = (tmp_path / "SCALING.md").read_text()
    assert all(f"| {s} |" in md for s in STAGE_LABELS if s != "tsne_subset")
    assert fitted_exponent([1e3, 1e4, 1e5], [1.0, 100.0, 1e4]) == pytest.approx(2.0)


def test_a_rewritten_results_md_keeps_its_notes_byte_for_byte(tmp_path):
    """RESULTS.md below NOTES_MARKER is hand-written: a run rewrites the table above it and keeps the notes."""
    from bench.results import NOTES_MARKER, Row, results_markdown, row_to_json, write_results

    info = {"cpu": "Fast CPU", "cores": 2, "gpu": None, "cuda": None, "python": "3", "versions": {"numpy": "2"}}
    rows = [Row("prepare", "6000 JPEGs", 4.0, 6.0, "ours", "PIL", "-", group="prepare")]
    result = {"machine": info, "small": False, "threads": 2, "thread_pins": {"torch": 2},
              "rows": [row_to_json(r) for r in rows]}
    notes = f"{NOTES_MARKER}\n## Notes\n\nA paragraph, a table and odd bytes: | a | b |\r\n\u00e9 x \t\n\n\n".encode()
    (tmp_path / "RESULTS.md").write_bytes(b"# an old table\n\n| prepare | stale |\n\n" + notes)
    for _ in range(2):  # and again on its own output
        write_results(tmp_path, result, rows)
        md = (tmp_path / "RESULTS.md").read_bytes()
        table = results_markdown(rows, info, False, 2, {"torch": 2}).encode()
        assert md == table + b"\n" + notes, md[-300:]
    (tmp_path / "RESULTS.md").write_text("# no notes\n")  # a file without the marker is simply replaced
    write_results(tmp_path, result, rows)
    assert (tmp_path / "RESULTS.md").read_bytes() == table


def test_the_committed_results_md_survives_regeneration(tmp_path):
    """Regenerating bench/RESULTS.md from bench/results.json keeps the committed notes byte for byte, and the
    committed table is what the generator writes (nobody edited the generated part by hand)."""
    from bench.results import NOTES_MARKER, kept_notes, row_from_json, write_results

    committed = (BENCH / "RESULTS.md").read_bytes()
    notes = kept_notes(BENCH / "RESULTS.md")
    assert notes.startswith(NOTES_MARKER.encode() + b"\n") and len(notes) > 1000, "bench/RESULTS.md lost its notes"
    result = json.loads((BENCH / "results.json").read_text())
    (tmp_path / "RESULTS.md").write_bytes(committed)
    write_results(tmp_path, result, [row_from_json(r) for r in result["rows"]])
    assert (tmp_path / "RESULTS.md").read_bytes() == committed


def test_the_device_rows_run_on_cpu_torch_and_agree_with_the_baselines():
    from bench.stages_device import knn_device_rows

    rows = knn_device_rows(1500, 8, "cpu")
    assert [r.baseline for r in rows] == ["torch.cdist + topk per 4,096-row block, same device",
                                          "faiss.knn(x, x, k + 1) on the CPU"]
    for r in rows:
        assert math.isfinite(r.ours_s) and r.ours_s > 0 and math.isfinite(r.baseline_s) and r.peak_mb >= 0, r
        share = float(r.notes.split("agree with ours on ")[1].split("%")[0])
        assert share >= 99.0, r.notes  # the same exact graph up to float rounding of near ties
