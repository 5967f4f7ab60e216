"""Bad files and careless commands: a clear one-line error, or skipped and counted; nothing already written lost."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from cli import main
from engine.data.imagecache import prepare
from engine.data.sources import SourceError, crop_resize
from engine.latents.importer import import_latents
from engine.latents.store import LatentsError, open_latents
from engine.model.checkpoint import CheckpointError, load_checkpoint
from engine.model.config import ModelConfig, TrainConfig
from engine.model.encode import encode
from engine.model.train import TrainingDiverged, train


def test_16_bit_images_are_scaled_not_clipped(tmp_path):
    grey = np.full((40, 40), 32896, np.uint16)  # 127.5 * 257 + 0.5: mid grey at 16 bits
    Image.fromarray(grey).save(tmp_path / "g16.png")
    img = Image.open(tmp_path / "g16.png")
    assert img.mode.startswith("I"), img.mode
    out = crop_resize(img, 32)
    assert abs(out.mean() - 128.0) < 1.0, out.mean()  # clipped, it read 255


def test_tiny_and_strip_images_are_skipped_counted_and_listed(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for k in range(6):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(folder / f"ok{k}.png")
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(folder / "dot.png")
    Image.fromarray(np.zeros((10, 1000, 3), np.uint8)).save(folder / "strip.png")
    with pytest.raises(SourceError, match="1x1 image"):
        crop_resize(Image.open(folder / "dot.png"), 32)
    attrs = prepare(folder, tmp_path / "run", size=32, workers=1, progress=False)
    assert attrs["counts"]["images"] == 6 and attrs["counts"]["skipped"] == 2
    assert sorted(s["id"] for s in attrs["skipped"]) == ["dot.png", "strip.png"]
    assert "1000x10" in next(s["error"] for s in attrs["skipped"] if s["id"] == "strip.png")


def test_failed_overwrite_of_imported_latents_keeps_the_old_store(tmp_path):
    good = np.random.default_rng(0).normal(size=(500, 32)).astype(np.float32)
    np.save(tmp_path / "good.npy", good)
    bad = good[:300, :16].copy()
    bad[7, 2] = np.nan
    np.save(tmp_path / "bad.npy", bad)
    run = tmp_path / "run"
    import_latents(tmp_path / "good.npy", run, progress=False)
    with pytest.raises(LatentsError, match="row 7"):
        import_latents(tmp_path / "bad.npy", run, overwrite=True, progress=False)
    z = open_latents(run)["z"][:]
    assert z.shape == (500, 32) and np.array_equal(z, good)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.npy", "good.npy", "run"]  # no half-built store left


def test_damaged_and_object_npy_files_are_one_line_errors(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}, None], dtype=object))
    (tmp_path / "trunc.npy").write_bytes((tmp_path / "obj.npy").read_bytes()[:20])
    np.save(tmp_path / "full.npy", np.ones((1000, 8), np.float32))
    (tmp_path / "short.npy").write_bytes((tmp_path / "full.npy").read_bytes()[:5000])
    for name in ("obj.npy", "trunc.npy", "short.npy"):
        with pytest.raises(LatentsError) as err:
            import_latents(tmp_path / name, tmp_path / f"run_{name}", progress=False)
        msg = str(err.value)
        assert name in msg and "\n" not in msg, msg


@pytest.fixture
def own_run(trained_run, tmp_path):
    """A copy of the session's trained run (cache, model, latents) that a test may damage."""
    return shutil.copytree(trained_run, tmp_path / "run")


def test_encode_refuses_to_replace_imported_latents(own_run, tmp_path):
    np.save(tmp_path / "mine.npy", np.random.default_rng(1).normal(size=(300, 16)).astype(np.float32))
    import_latents(tmp_path / "mine.npy", own_run, overwrite=True, progress=False)
    with pytest.raises(ValueError, match="import-latents"):
        encode(own_run, device="cpu", progress=False)
    assert open_latents(own_run)["z"].shape == (300, 16)  # untouched
    attrs = encode(own_run, device="cpu", progress=False, overwrite=True)
    assert attrs["complete"] and open_latents(own_run)["z"].shape == (300, 32)


def test_a_damaged_checkpoint_is_one_line_naming_it_and_the_alternative(own_run, capsys):
    best = own_run / "checkpoints" / "best.pt"
    best.write_bytes(b"")  # a kill -9 during the copy, as it used to leave it
    with pytest.raises(CheckpointError, match="best.pt is damaged.*--checkpoint .*last.pt"):
        load_checkpoint(best)
    assert main(["encode", "--run", str(own_run), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "best.pt is damaged" in err, err


def test_non_finite_weights_are_refused_by_encode(own_run):
    ckpt = torch.load(own_run / "checkpoints" / "best.pt", weights_only=True)
    first = next(k for k, v in ckpt["model"].items() if v.is_floating_point())
    ckpt["model"][first][...] = float("nan")
    torch.save(ckpt, own_run / "checkpoints" / "best.pt")
    shutil.rmtree(own_run / "latents.zarr")
    with pytest.raises(CheckpointError, match="non-finite weights"):
        encode(own_run, device="cpu", progress=False)
    assert not (own_run / "latents.zarr").exists()


def test_diverged_training_stops_at_once_and_writes_nothing_non_finite(tmp_path):
    run = tmp_path / "run"
    prepare("synthetic:120", run, size=32, workers=1, progress=False)
    cfg = TrainConfig(epochs=2, batch_size=16, lr=1e30, device="cpu", grid_images=2)
    with pytest.raises(TrainingDiverged, match=r"epoch 1, step \d+.*no checkpoint was written"):
        train(run, cfg, ModelConfig(size=32, z_dim=8, widths=(4, 4, 4, 4)), progress=False)
    assert not list((run / "checkpoints").glob("*.pt"))


def test_leftover_temporary_checkpoint_is_removed_on_the_next_run(tmp_path):
    run = tmp_path / "run"
    prepare("synthetic:120", run, size=32, workers=1, progress=False)
    mcfg = ModelConfig(size=32, z_dim=8, widths=(4, 4, 4, 4))
    train(run, TrainConfig(epochs=1, batch_size=16, device="cpu", grid_images=2), mcfg, progress=False)
    (run / "checkpoints" / "last.tmp").write_bytes(b"")
    train(run, TrainConfig(epochs=2, batch_size=16, device="cpu", grid_images=2), mcfg, resume=True, progress=False)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.pt", "last.pt"]


def test_zero_widths_is_a_one_line_error(tmp_path, capsys):
    prepare("synthetic:40", tmp_path, size=32, workers=1, progress=False)
    assert main(["train", "--run", str(tmp_path), "--widths", "0,0,0,0", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "widths must be positive" in err, err


def test_stats_on_fewer_points_than_dimensions_warns(tmp_path, caplog):
    from engine.analysis.config import StatsConfig
    from engine.analysis.stats import compute_stats

    np.save(tmp_path / "five.npy", np.random.default_rng(2).normal(size=(5, 256)).astype(np.float32))
    import_latents(tmp_path / "five.npy", tmp_path / "run", progress=False)
    with caplog.at_level("WARNING"):
        res = compute_stats(tmp_path / "run", StatsConfig(figures=False), progress=False)
    assert "singular" in res["warnings"][0] and "5 points in 256 dimensions" in res["warnings"][0]
    assert json.loads((tmp_path / "run" / "stats" / "stats.json").read_text())["warnings"] == res["warnings"]
    assert any("singular" in r.message for r in caplog.records)



def test_two_processes_on_one_run_directory_the_second_is_refused_naming_the_first(tmp_path):
    import subprocess
    import sys
    import time

    from tests.conftest import REPO

    prepare("synthetic:600", tmp_path / "run", size=32, workers=1, progress=False)
    base = [sys.executable, str(REPO / "cli.py"), "-q", "train", "--run", str(tmp_path / "run"), "--batch-size", "16",
            "--z-dim", "8", "--device", "cpu"]
    cmd = base + ["--epochs", "30"]
    first = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lock = tmp_path / "run" / ".zspace.lock"
        deadline = time.monotonic() + 60
        while not (lock.exists() and lock.read_text().startswith("pid")) and time.monotonic() < deadline:
            time.sleep(0.1)
        second = subprocess.run(cmd + ["--overwrite"], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stderr
        assert f"in use by pid {first.pid} (zspace train)" in second.stderr and second.stderr.count("\n") == 1
    finally:
        first.kill()
        first.wait()
    # the kernel released the killed holder's lock: the next command runs
    third = subprocess.run(base + ["--epochs", "1", "--overwrite"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert third.returncode == 0, third.stderr


def test_killing_prepare_leaves_no_worker_processes(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    import psutil

    from tests.conftest import REPO

    cmd = [sys.executable, str(REPO / "cli.py"), "-q", "prepare", "synthetic:50000", "--run", str(tmp_path / "run"),
           "--workers", "2"]
    parent = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc = psutil.Process(parent.pid)
    deadline = time.monotonic() + 60
    children = []
    while time.monotonic() < deadline:
        children = proc.children(recursive=True)
        if len(children) >= 3:  # the resource tracker and two decode workers
            break
        time.sleep(0.2)
    assert len(children) >= 2, f"workers never started: {children}"
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    gone, alive = psutil.wait_procs(children, timeout=15)
    assert not alive, f"still running after the parent was killed: {[(p.pid, p.name()) for p in alive]}"


def test_a_new_image_cache_makes_the_model_latents_and_statistics_stale(own_run, capsys):
    from engine.analysis.config import StatsConfig
    from engine.analysis.planes import dominant_components
    from engine.analysis.stats import compute_stats

    compute_stats(own_run, StatsConfig(figures=False), progress=False)
    prepare("synthetic:300:7", own_run, size=64, workers=1, overwrite=True, progress=False)  # other faces
    run = str(own_run)
    for argv, says in ((["stats", "--run", run], "encoded from another image cache"),
                       (["train", "--run", run, "--resume", "--epochs", "3", "--device", "cpu"],
                        "trained on another image cache"),
                       (["encode", "--run", run, "--device", "cpu"], "trained on another image cache")):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert says in err and err.count("\n") == 1, (argv, err)
    # new latents (imported here) make the old stats.json stale: its dominant components are not used
    np.save(own_run / "new.npy", np.random.default_rng(5).normal(size=(300, 32)).astype(np.float32) * 0.1)
    import_latents(own_run / "new.npy", own_run, overwrite=True, progress=False)
    std = np.ones(32)
    std[[4, 9]] = 3.0
    assert dominant_components(own_run, std) == [4, 9]


def test_zspace_run_says_at_warning_level_what_it_discards(tmp_path, caplog):
    from engine.pipeline import run
    from tests.conftest import TINY

    opts = {**TINY, "compare_n": 20, "tsne_n": 100}
    run(tmp_path, quick=True, device="cpu", progress=False, until="encode", **opts)
    with caplog.at_level("WARNING", logger="engine.pipeline"):
        run(tmp_path, quick=True, device="cpu", progress=False, until="train", **{**opts, "epochs": 2})
    msgs = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("train: options or inputs changed (epochs 1 -> 2)" in m and "discarding checkpoints/" in m
               for m in msgs), msgs


@pytest.mark.slow  # a few minutes on 2 cores: three stages, each killed three times and resumed
def test_kill_9_at_random_points_then_resume_equals_a_clean_run(tmp_path):
    import subprocess
    import sys
    import time

    from tests.conftest import REPO

    def cli(run, *argv):
        return [sys.executable, str(REPO / "cli.py"), "-q", argv[0], *argv[1:], "--run", str(run)]

    stages = (("prepare", "synthetic:1000", "--size", "32", "--workers", "2"),
              ("train", "--epochs", "2", "--batch-size", "32", "--z-dim", "8", "--widths", "4,8,8,8", "--device",
               "cpu", "--resume"),
              ("encode", "--device", "cpu"))
    clean, faulty = tmp_path / "clean", tmp_path / "faulty"
    seconds = {}
    for argv in stages:
        t0 = time.perf_counter()
        subprocess.run(cli(clean, *argv), cwd=REPO, check=True, capture_output=True)
        seconds[argv[0]] = time.perf_counter() - t0
    rng = np.random.default_rng(11)
    kills = 0
    for argv in stages:
        for _ in range(3):
            p = subprocess.Popen(cli(faulty, *argv), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(0.3, 0.95) * seconds[argv[0]])
            kills += p.poll() is None
            p.kill()
            p.wait()
        done = subprocess.run(cli(faulty, *argv), cwd=REPO, capture_output=True, text=True)
        assert done.returncode == 0, (argv[0], done.stderr)
    assert kills >= 6, f"only {kills} of 9 kills hit a running stage"
    a, b = zarr_group(clean / "images.zarr"), zarr_group(faulty / "images.zarr")
    np.testing.assert_array_equal(a["images"][:], b["images"][:])
    assert list(a["ids"][:]) == list(b["ids"][:])
    wa = torch.load(clean / "checkpoints" / "last.pt", weights_only=True)["model"]
    wb = torch.load(faulty / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa), "resumed training differs from the clean run"
    np.testing.assert_array_equal(zarr_group(clean / "latents.zarr")["z"][:], zarr_group(faulty / "latents.zarr")["z"][:])


def zarr_group(path):
    import zarr

    return zarr.open_group(path, mode="r")


def test_a_finite_but_exploding_loss_is_divergence_not_the_best_epoch(tmp_path):
    run = tmp_path / "run"
    prepare("synthetic:120", run, size=32, workers=1, progress=False)
    cfg = TrainConfig(epochs=2, batch_size=16, lr=1e3, device="cpu", grid_images=2)
    with pytest.raises(TrainingDiverged, match="training diverged"):
        train(run, cfg, ModelConfig(size=32, z_dim=8, widths=(4, 4, 4, 4)), progress=False)
    assert not list((run / "checkpoints").glob("*.pt"))


def test_a_truncated_last_checkpoint_on_resume_is_one_line_naming_best(own_run, capsys):
    last = own_run / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    assert main(["train", "--run", str(own_run), "--resume", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "last.pt is damaged" in err and "--checkpoint" in err and "best.pt" in err, err


def test_ctrl_c_in_train_says_to_resume(own_run, capsys, monkeypatch):
    import engine.model.train

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(engine.model.train, "train", interrupted)
    assert main(["train", "--run", str(own_run), "--device", "cpu"]) == 130
    assert "rerun it with --resume to continue" in capsys.readouterr().err


def test_replacements_are_built_beside_and_a_failed_one_leaves_the_old_data(own_run, monkeypatch):
    import engine.data.imagecache as imagecache
    import engine.model.encode as encode_mod
    from engine.data.synthetic import render_block

    old_images = open_latents(own_run)["z"][:]  # the latents of the old model
    old_cache = zarr_group(own_run / "images.zarr")["images"][:]

    # prepare --overwrite with other faces, interrupted before it finished: the old cache is untouched
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(imagecache, "_finish", interrupted)
        with pytest.raises(KeyboardInterrupt):
            prepare("synthetic:300:9", own_run, size=64, workers=1, overwrite=True, progress=False)
    np.testing.assert_array_equal(zarr_group(own_run / "images.zarr")["images"][:], old_cache)
    assert (own_run / "images.zarr.new").exists()
    prepare("synthetic:300:9", own_run, size=64, workers=1, overwrite=True, progress=False)  # resumes, then swaps
    np.testing.assert_array_equal(zarr_group(own_run / "images.zarr")["images"][:], render_block(0, 300, 64, seed=9))
    assert not (own_run / "images.zarr.new").exists()

    # train --overwrite that diverges at once: the old model comes back
    old_weights = torch.load(own_run / "checkpoints" / "last.pt", weights_only=True)["model"]
    with pytest.raises(TrainingDiverged):
        train(own_run, TrainConfig(epochs=1, batch_size=32, lr=1e30, device="cpu"), ModelConfig(size=64, z_dim=32),
              overwrite=True, progress=False)
    back = torch.load(own_run / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(old_weights[k], back[k]) for k in old_weights)
    assert not (own_run / "checkpoints.replaced").exists()

    # a new model's encode, interrupted: the old latents stay readable until the new ones are complete
    train(own_run, TrainConfig(epochs=1, batch_size=32, device="cpu"), ModelConfig(size=64, z_dim=32),
          overwrite=True, progress=False)
    assert not (own_run / "checkpoints.replaced").exists()
    with monkeypatch.context() as m:
        m.setattr(encode_mod, "encode_block", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
        with pytest.raises(KeyboardInterrupt):
            encode(own_run, device="cpu", progress=False)
    assert np.array_equal(zarr_group(own_run / "latents.zarr")["z"][:], old_images)
    encode(own_run, device="cpu", progress=False)
    assert not np.array_equal(open_latents(own_run)["z"][:], old_images)
    assert not (own_run / "latents.zarr.new").exists()


def test_zspace_run_interrupted_while_replacing_a_stage_finishes_the_replacement(tmp_path, monkeypatch):
    import engine.pipeline
    from engine.pipeline import run
    from tests.conftest import TINY

    opts = {**TINY, "compare_n": 20, "tsne_n": 100}
    run(tmp_path, quick=True, device="cpu", progress=False, until="train", **opts)
    first = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["model"]
    real_train = engine.pipeline.train

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(engine.pipeline, "train", killed)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, quick=True, device="cpu", progress=False, until="train", **{**opts, "seed": 1})
    monkeypatch.setattr(engine.pipeline, "train", real_train)
    run(tmp_path, quick=True, device="cpu", progress=False, until="train", **{**opts, "seed": 1})
    ckpt = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["config"]["train"]["seed"] == 1, "the rerun resumed the old model instead of replacing it"
    assert not all(torch.equal(first[k], ckpt["model"][k]) for k in first)
    assert not (tmp_path / "checkpoints.replaced").exists()


def test_an_all_black_chunk_is_written_and_verifies(tmp_path):
    folder = tmp_path / "black"
    folder.mkdir()
    for k in range(300):  # more than one 256-row chunk of images that equal the fill value
        Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(folder / f"{k:03d}.png")
    prepare(folder, tmp_path / "run", size=32, workers=2, progress=False)
    assert main(["verify", "--run", str(tmp_path / "run")]) == 0


def test_a_missing_array_and_a_file_as_run_directory_are_one_line_errors(own_run, tmp_path, capsys):
    shutil.rmtree(own_run / "latents.zarr" / "z")
    assert main(["stats", "--run", str(own_run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "has no array 'z'" in err, err
    (tmp_path / "afile").write_text("x")
    assert main(["prepare", "synthetic:10", "--run", str(tmp_path / "afile")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "cannot use" in err and "afile" in err, err


def test_float_and_int32_images_are_scaled_to_8_bits():
    f = Image.fromarray(np.full((40, 40), 0.5, np.float32), mode="F")
    assert abs(crop_resize(f, 32).mean() - 127.5) <= 0.5
    i = Image.fromarray(np.full((40, 40), 32896, np.int32), mode="I")  # a 16-bit PNG as some Pillows open it
    assert abs(crop_resize(i, 32).mean() - 128.0) <= 0.5


def test_resume_survives_a_log_line_cut_by_a_kill(tmp_path):
    run = tmp_path / "run"
    prepare("synthetic:120", run, size=32, workers=1, progress=False)
    mcfg = ModelConfig(size=32, z_dim=8, widths=(4, 4, 4, 4))
    train(run, TrainConfig(epochs=1, batch_size=16, device="cpu", grid_images=2), mcfg, progress=False)
    log = run / "train" / "log.jsonl"
    log.write_text(log.read_text() + '{"epoch": 2, "train_lo')
    train(run, TrainConfig(epochs=2, batch_size=16, device="cpu", grid_images=2), mcfg, resume=True, progress=False)
    assert [json.loads(x)["epoch"] for x in log.read_text().splitlines()] == [1, 2]


def test_decoding_with_a_model_that_did_not_encode_the_latents_is_refused(own_run, capsys):
    train(own_run, TrainConfig(epochs=1, batch_size=32, device="cpu"), ModelConfig(size=64, z_dim=32),
          overwrite=True, progress=False)  # a new model; latents.zarr still holds the old model's latents
    assert main(["generate", "--run", str(own_run), "--sampler", "mvn", "--n", "4", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert "encoded by another checkpoint" in err and "zspace encode" in err and err.count("\n") == 0, err
    encode(own_run, device="cpu", progress=False)
    assert main(["generate", "--run", str(own_run), "--sampler", "mvn", "--n", "4", "--device", "cpu"]) == 0
