"""No file zspace reads can run code: crafted checkpoints are refused unread by every verb that opens one."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from cli import main
from engine.files import file_sha256
from engine.model.checkpoint import (
    CheckpointError,
    UnsafeCheckpoint,
    check_plain,
    read_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)


class RunsCode:
    """Pickles as a call of ``os.system``: what a crafted checkpoint carries."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def crafted(kind: str, good: Path, marker: Path) -> dict:
    """``whole``: the model entry is the payload; ``extra``: a valid checkpoint with one more entry that is."""
    if kind == "whole":
        return {"model": RunsCode(marker)}
    ckpt = torch.load(good, weights_only=True)
    ckpt["notes"] = [RunsCode(marker)]
    return ckpt


def one_line_error(capsys, name: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, f"expected one line, got:\n{err}"
    assert name in err and "refused" in err, err
    return err


@pytest.mark.parametrize("kind", ["whole", "extra"])
def test_a_crafted_checkpoint_runs_nothing_through_any_verb(trained_copy, tmp_path, kind, capsys):
    marker = tmp_path / "PWNED"
    payload = crafted(kind, trained_copy / "checkpoints" / "best.pt", marker)
    # the payload is real: an unrestricted load runs it (so its absence below means the refusal worked)
    torch.save(payload, tmp_path / "probe.pt")
    torch.load(tmp_path / "probe.pt", weights_only=False)
    assert marker.exists(), "the crafted payload does not run under a plain load: the test would prove nothing"
    marker.unlink()

    evil = tmp_path / "evil.pt"
    torch.save(payload, evil)
    run = str(trained_copy)
    assert main(["encode", "--run", run, "--checkpoint", str(evil), "--device", "cpu"]) == 2
    one_line_error(capsys, "evil.pt")

    # a whole run directory someone else filled: its latents encoded by that best.pt
    torch.save(payload, trained_copy / "checkpoints" / "best.pt")
    zarr.open_group(trained_copy / "latents.zarr", mode="r+").attrs["checkpoint_sha256"] = file_sha256(
        trained_copy / "checkpoints" / "best.pt")
    for argv in (["generate", "--run", run, "--sampler", "mvn", "--n", "4", "--device", "cpu"],
                 ["paths", "--run", run, "--device", "cpu"],
                 ["compare", "--run", run, "--n", "8", "--device", "cpu"],
                 ["facemap", "--run", run, "--n", "20", "--device", "cpu"],
                 ["verify", "--run", run]):
        assert main(argv) == 2, argv[0]
        one_line_error(capsys, "best.pt")

    torch.save(payload, trained_copy / "checkpoints" / "last.pt")
    assert main(["train", "--run", run, "--resume", "--epochs", "3", "--device", "cpu"]) == 2
    one_line_error(capsys, "last.pt")
    assert not marker.exists(), "a crafted checkpoint ran its code"
    assert not (trained_copy / "generate").exists() and not (trained_copy / "facemap").exists(), "a stage started"


def test_a_checkpoint_written_here_reads_with_plain_weights_only(trained_run):
    for name in ("last.pt", "best.pt"):
        ckpt = torch.load(trained_run / "checkpoints" / name, weights_only=True)  # plain torch, no allow-list
        check_plain(ckpt)
        assert {"model", "optimizer", "scaler", "rng", "config", "epoch"} <= set(ckpt)
        assert isinstance(ckpt["rng"]["numpy"], dict) and ckpt["rng"]["numpy"]["key"].shape == (624,)


def test_the_rng_state_round_trips_exactly(tmp_path):
    np.random.seed(7)
    np.random.standard_normal(3)  # leaves a cached gaussian: has_gauss 1
    torch.manual_seed(3)
    save_checkpoint({"model": {}, "config": {}, "epoch": 0, "rng": rng_state()}, tmp_path / "c.pt")
    expect_np, expect_torch = np.random.standard_normal(5), torch.rand(5)
    np.random.seed(0)
    torch.manual_seed(0)
    set_rng_state(read_checkpoint(tmp_path / "c.pt")["rng"])
    np.testing.assert_array_equal(np.random.standard_normal(5), expect_np)
    assert torch.equal(torch.rand(5), expect_torch)


def test_a_checkpoint_of_the_previous_format_still_resumes_exactly(tmp_path):
    """The previous writer pickled numpy's RNG state as its tuple with a uint32 array: read with numpy's array
    reconstruction allowed (data, not code), it resumes to the same stream."""
    np.random.seed(11)
    legacy = {"model": {}, "config": {}, "epoch": 0, "rng": {"torch": torch.get_rng_state(),
                                                                "numpy": np.random.get_state()}}
    torch.save(legacy, tmp_path / "old.pt")
    with pytest.raises(Exception, match="Weights only load failed"):
        torch.load(tmp_path / "old.pt", weights_only=True)  # plain weights_only alone refuses the numpy array
    expect = np.random.standard_normal(4)
    np.random.seed(0)
    set_rng_state(read_checkpoint(tmp_path / "old.pt")["rng"])
    np.testing.assert_array_equal(np.random.standard_normal(4), expect)


def test_a_checkpoint_that_would_not_read_back_is_never_written(tmp_path):
    for bad, where in (({"epoch": np.int64(3)}, "['epoch']"), ({"config": {"run": Path("x")}}, "['config']['run']"),
                       ({"rng": {"numpy": np.random.get_state()}}, "['rng']['numpy'][1]")):
        with pytest.raises(TypeError, match=f"checkpoint{where.replace('[', '.').replace(']', '.')}"):
            save_checkpoint(bad, tmp_path / "c.pt")
    assert not list(tmp_path.iterdir()), "a refused checkpoint left a file"


def test_refusal_and_damage_are_told_apart(tmp_path):
    torch.save({"model": RunsCode(tmp_path / "m")}, tmp_path / "evil.pt")
    with pytest.raises(UnsafeCheckpoint, match="names posix.system|names os.system"):
        read_checkpoint(tmp_path / "evil.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "evil.pt").read_bytes()[:40])
    with pytest.raises(CheckpointError, match="is damaged") as info:
        read_checkpoint(tmp_path / "cut.pt")
    assert not isinstance(info.value, UnsafeCheckpoint)
    assert not (tmp_path / "m").exists()


def _zarr_v2_pickled(path: Path, payload) -> Path:
    """A Zarr v2 array ``z`` whose only chunk is a pickle and whose metadata names numcodecs' pickle codec."""
    import json
    import pickle

    (path / "z").mkdir(parents=True)
    (path / ".zgroup").write_text(json.dumps({"zarr_format": 2}))
    (path / "z" / ".zarray").write_text(json.dumps({
        "zarr_format": 2, "shape": [4, 2], "chunks": [4, 2], "dtype": "<f4", "compressor": {"id": "pickle"},
        "fill_value": 0, "filters": None, "order": "C"}))
    (path / "z" / "0.0").write_bytes(pickle.dumps(payload))
    return path


def test_latents_that_carry_pickles_are_refused_unread(tmp_path, capsys):
    marker = tmp_path / "PWNED"
    payload = RunsCode(marker)
    files = [tmp_path / "objects.npy", tmp_path / "objects.npz", _zarr_v2_pickled(tmp_path / "pickled.zarr", payload)]
    np.save(files[0], np.array([[payload, 1.0]], dtype=object), allow_pickle=True)
    np.savez(files[1], z=np.array([[payload, 1.0]], dtype=object))
    for f in files:
        assert main(["import-latents", str(f), "--run", str(tmp_path / f"run_{f.stem}")]) == 2, f.name
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and f.name in err, err
        assert not (tmp_path / f"run_{f.stem}" / "latents.zarr").exists()
    assert not marker.exists(), "an imported file ran its code"


def test_a_store_whose_codecs_unpickle_is_refused_on_its_metadata(tmp_path):
    """zarr itself (3.1) knows no pickle codec; a zarr that did would decode chunks with it: the metadata check
    refuses before any chunk is read, whatever zarr version reads the store."""
    from engine.stores import UnsafeStore, refuse_unpickling

    good = zarr.open_group(tmp_path / "g.zarr", mode="w").create_array("z", shape=(4, 2), dtype="f4")
    refuse_unpickling(good, "g.zarr/z")  # zarr's defaults pass

    class Meta:
        def __init__(self, d):
            self.d = d

        def to_dict(self):
            return self.d

    class Array:
        def __init__(self, d):
            self.metadata = Meta(d)

    for meta in ({"zarr_format": 2, "compressor": {"id": "pickle"}, "filters": None},
                 {"zarr_format": 2, "compressor": None, "filters": [{"id": "zstd"}, {"id": "pickle", "protocol": 5}]},
                 {"zarr_format": 3, "codecs": [{"name": "sharding_indexed", "configuration": {
                     "codecs": [{"name": "numcodecs.pickle"}]}}]}):
        with pytest.raises(UnsafeStore, match="pickle"):
            refuse_unpickling(Array(meta), "x.zarr/z")


# the only unpickling in zspace: bytes its own process made a moment before, never a file's
OWN_PICKLES = {("engine/analysis/tsne.py", "pickle.loads"): "the map the client scattered to its own Dask workers",
               ("engine/model/ranks.py", "pickle.loads"): "a check that an exception survives the trip between ranks"}


def test_no_reader_in_the_code_can_unpickle_what_a_file_brings():
    """Every call that could unpickle, found in the source: torch.load only with weights_only=True, np.load never
    with allow_pickle=True, pickle/joblib/shelve loads only where the bytes are zspace's own (listed above)."""
    import ast

    repo = Path(__file__).resolve().parent.parent
    found = []
    for path in [repo / "cli.py", *sorted((repo / "engine").rglob("*.py")), *sorted((repo / "kernels").rglob("*.py"))]:
        rel = path.relative_to(repo).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = ast.unparse(node.func)
            kw = {k.arg: ast.unparse(k.value) for k in node.keywords}
            if name == "torch.load" and kw.get("weights_only") != "True":
                found.append(f"{rel}:{node.lineno} torch.load without weights_only=True")
            elif name in ("np.load", "numpy.load") and kw.get("allow_pickle", "False") != "False":
                found.append(f"{rel}:{node.lineno} np.load with allow_pickle={kw['allow_pickle']}")
            elif name.split(".")[0] in ("pickle", "cloudpickle", "joblib", "shelve", "dill", "marshal") and \
                    name.split(".")[-1] in ("load", "loads", "open", "Unpickler") and (rel, name) not in OWN_PICKLES:
                found.append(f"{rel}:{node.lineno} {name}")
    assert not found, "readers that could run a file's code:\n" + "\n".join(found)
