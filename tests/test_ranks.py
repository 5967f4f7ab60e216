"""Training and encoding on several ranks: torchrun, gloo, 2 CPU processes, against one process.

Tolerance of "the same weights": after one epoch (16 Adam steps, lr 5e-4), a
1-process run on 2 threads differs from the same run on 1 thread by 1.5e-4 at
most (measured): floating-point sums taken in another order, amplified by Adam
where a gradient is near zero. Two ranks differ from one process by the same
1.5e-4 (measured), batch norm left unsynchronised by 2e-2. The tolerance,
1e-3 (two learning rates), sits between: above reordered sums, far below a
wrong batch statistic. Encoding has no such slack: bit for bit.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
import zarr

import engine.model.encode as encode_module
from engine.data.imagecache import prepare
from engine.latents.store import open_latents
from engine.model.checkpoint import load_checkpoint, read_checkpoint
from engine.model.config import ModelConfig, RankFailed, TrainConfig
from engine.model.encode import encode
from engine.model.launch import launch, train_call
from engine.model.ranks import CpuSyncBatchNorm, Ranks
from engine.model.train import train

WORKER = Path(__file__).with_name("ranks_worker.py")
MODEL = ModelConfig(size=32, z_dim=16, widths=(8, 16, 16, 16))
SAME_WEIGHTS = 1e-3  # see the module docstring
HALF_WEIGHTS = 1e-2  # fp16/bf16 activations round at 1e-3..4e-3 relative: per-rank batches round differently


def cfg(epochs=1, precision="auto"):
    return TrainConfig(epochs=epochs, batch_size=16, seed=3, in_memory=True, precision=precision, device="cpu")


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("ranks") / "cache"
    prepare("synthetic:320", run, size=32, workers=1, progress=False)  # 270 train images: 16 steps of 16
    return run


def fresh(cache: Path, where: Path) -> Path:
    shutil.copytree(cache, where)
    return where


def weights(run: Path) -> dict:
    return read_checkpoint(run / "checkpoints" / "last.pt")["model"]


def max_diff(a: dict, b: dict) -> float:
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].is_floating_point())


def on_ranks(verb, kwargs, plant: str = "", n: int = 2):
    """``launch`` with a planted fault (tests/ranks_worker.py) in every rank."""
    old = os.environ.get("ZSPACE_PLANT")
    os.environ["ZSPACE_PLANT"] = plant
    try:
        return launch(verb, kwargs, n, script=WORKER, quiet=True)
    finally:
        os.environ.pop("ZSPACE_PLANT") if old is None else os.environ.__setitem__("ZSPACE_PLANT", old)


@pytest.fixture(scope="module")
def two_rank_epoch(cache, tmp_path_factory) -> tuple[Path, Path]:
    """(a 2-rank run of one epoch, the audit file of what rank 1 wrote)."""
    root = tmp_path_factory.mktemp("two")
    run = fresh(cache, root / "run")
    audit = root / "audit"
    on_ranks("train", train_call(cfg(1), MODEL, run_dir=str(run), progress=False), f"audit:{audit}")
    return run, audit


def test_two_ranks_train_as_one_process_with_the_global_batch(cache, two_rank_epoch, tmp_path):
    run2, _ = two_rank_epoch
    run1 = fresh(cache, tmp_path / "one")
    train(run1, cfg(1), MODEL, progress=False)
    diff = max_diff(weights(run1), weights(run2))
    assert diff < SAME_WEIGHTS, f"2 ranks x 8 vs 1 process x 16: max |dw| = {diff:.2e}"
    log1, log2 = (json.loads((r / "train" / "log.jsonl").read_text()) for r in (run1, run2))
    assert log2["train_loss"] == pytest.approx(log1["train_loss"], rel=1e-4)
    assert log2["val_loss"] == pytest.approx(log1["val_loss"], rel=1e-4)  # every validation row, once
    assert json.loads((run2 / "train" / "config.json").read_text())["ranks"] == 2
    # the checkpoint is a plain model's: it loads in one process without any rank
    model, _ = load_checkpoint(run2 / "checkpoints" / "best.pt")
    assert not any(isinstance(m, CpuSyncBatchNorm) for m in model.modules())


@pytest.mark.parametrize("family", ["vae", "rae"])
def test_two_ranks_train_a_vae_and_an_rae_as_one_process(cache, tmp_path, family):
    """A vae's noise is a function of (seed, epoch, step) cut by rank, not of each rank's RNG: the same as one
    process (with each rank's RNG, rows of both ranks would get the same noise and the weights would differ)."""
    model = ModelConfig(family=family, size=32, z_dim=16, widths=(8, 16, 16, 16))
    run1, run2 = fresh(cache, tmp_path / "one"), fresh(cache, tmp_path / "two")
    train(run1, cfg(1), model, progress=False)
    on_ranks("train", train_call(cfg(1), model, run_dir=str(run2), progress=False))
    diff = max_diff(weights(run1), weights(run2))
    assert diff < SAME_WEIGHTS, f"{family}: 2 ranks x 8 vs 1 process x 16: max |dw| = {diff:.2e}"


def test_unsynchronised_batch_norm_would_fail_the_comparison(cache, two_rank_epoch, tmp_path):
    """The tolerance can fail: per-rank batch statistics (what SyncBatchNorm prevents) are far outside it."""
    run2, _ = two_rank_epoch
    bad = fresh(cache, tmp_path / "unsynced")
    on_ranks("train", train_call(cfg(1), MODEL, run_dir=str(bad), progress=False), "unsynced")
    assert max_diff(weights(bad), weights(run2)) > 10 * SAME_WEIGHTS


def test_only_rank_0_writes(two_rank_epoch):
    run, audit = two_rank_epoch
    written = (audit.parent / f"{audit.name}.1").read_text().splitlines()
    assert (run / "checkpoints" / "last.pt").is_file() and (run / "train" / "loss.png").is_file()
    inside = [w for w in written if str(run.resolve()) in str(Path(w.split(" ", 1)[1]).resolve())]
    assert inside == [], f"rank 1 wrote into the run directory: {inside[:5]}"


def test_interrupted_two_rank_run_resumes_as_if_never_stopped(cache, two_rank_epoch, tmp_path):
    whole = fresh(cache, tmp_path / "whole")
    on_ranks("train", train_call(cfg(2), MODEL, run_dir=str(whole), progress=False))
    # a copy of the one-epoch run, resumed for epoch 2; rank 1 raises at its 5th step
    broken = tmp_path / "broken"
    shutil.copytree(two_rank_epoch[0], broken)
    t0 = time.perf_counter()
    with pytest.raises(RankFailed, match=r"rank 1 failed: RuntimeError: planted failure on rank 1") as err:
        on_ranks("train", train_call(cfg(2), None, run_dir=str(broken), progress=False, resume=True), "raise:1:5")
    assert time.perf_counter() - t0 < 120 and err.value.exit_code == 1
    assert "planted failure" in err.value.detail, "the traceback of the failing rank comes back"
    assert read_checkpoint(broken / "checkpoints" / "last.pt")["epoch"] == 1, "nothing of the failed epoch saved"
    assert not list((broken / "checkpoints").glob("*.tmp"))
    # resumed on 2 ranks: exactly the uninterrupted run (same ranks, same sums)
    on_ranks("train", train_call(cfg(2), None, run_dir=str(broken), progress=False, resume=True))
    assert max_diff(weights(broken), weights(whole)) == 0.0
    log = [json.loads(line) for line in (broken / "train" / "log.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in log] == [1, 2]
    # the 2-rank checkpoint of epoch 1, resumed in one process
    single = tmp_path / "single"
    shutil.copytree(two_rank_epoch[0], single)
    train(single, cfg(2), None, resume=True, progress=False)
    assert max_diff(weights(single), weights(whole)) < SAME_WEIGHTS


def test_killed_rank_ends_the_job_with_its_name(cache, tmp_path):
    run = fresh(cache, tmp_path / "run")
    cmd = [sys.executable, "-m", "cli", "-q", "train", "--run", str(run), "--nproc", "2", "--epochs", "500",
           "--batch-size", "16", "--z-dim", "16", "--widths", "8,16,16,16", "--rank-timeout", "60"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=Path(__file__).parent.parent)
    try:
        deadline = time.time() + 120
        while not (run / "checkpoints" / "last.pt").exists():  # training is under way on both ranks
            assert proc.poll() is None and time.time() < deadline, proc.communicate()
            time.sleep(0.2)
        rank1 = [p for p in psutil.Process(proc.pid).children(recursive=True)
                 if p.environ().get("RANK") == "1" and "python" in p.name()]
        assert len(rank1) == 1
        rank1[0].send_signal(signal.SIGKILL)
        t_kill = time.perf_counter()
        _, err = proc.communicate(timeout=90)
    finally:
        proc.kill()
    assert proc.returncode == 1
    assert time.perf_counter() - t_kill < 60
    assert "zspace train: error: rank 1 failed: killed by signal 9" in err, err[-2000:]
    assert not list((run / "checkpoints").glob("*.tmp")), "the checkpoint write stays atomic"
    assert read_checkpoint(run / "checkpoints" / "last.pt")["epoch"] >= 1


def test_batch_size_must_split_over_ranks(cache, tmp_path):
    from cli import main

    run = fresh(cache, tmp_path / "r")
    assert main(["train", "--run", str(run), "--nproc", "2", "--batch-size", "15"]) == 2
    assert not (run / "checkpoints").exists()
    # under an external torchrun the training itself refuses (every rank alike)
    with pytest.raises(ValueError, match="--batch-size 15 does not split over 2 ranks"):
        mp = pytest.MonkeyPatch()
        mp.setenv("WORLD_SIZE", "2")
        mp.setattr("engine.model.train.process_group", _fake_group(Ranks(1, 2)))
        try:
            train(run, TrainConfig(batch_size=15, device="cpu"), MODEL, progress=False)
        finally:
            mp.undo()


def _fake_group(ranks):
    import contextlib

    @contextlib.contextmanager
    def group(device, timeout):
        yield ranks, torch.device("cpu")

    return group


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_mixed_precision_on_cpu_one_and_two_ranks(cache, two_rank_epoch, tmp_path, precision):
    """The GPU user's precision paths (fp16 + GradScaler, bf16 autocast) run here, single-rank and 2-rank."""
    fp32_val = json.loads((two_rank_epoch[0] / "train" / "log.jsonl").read_text())["val_loss"]
    one, two = fresh(cache, tmp_path / "one"), fresh(cache, tmp_path / "two")
    last1 = train(one, cfg(1, precision), MODEL, progress=False)
    last2 = on_ranks("train", train_call(cfg(1, precision), MODEL, run_dir=str(two), progress=False))
    for run, last in ((one, last1), (two, last2)):
        saved = json.loads((run / "train" / "config.json").read_text())
        assert saved["precision"] == precision
        assert np.isfinite(last["train_loss"]) and last["val_loss"] == pytest.approx(fp32_val, rel=1e-2)
        scaler = read_checkpoint(run / "checkpoints" / "last.pt")["scaler"]
        if precision == "fp16":  # the GradScaler ran: its scale and the count of steps without overflow
            assert scaler["scale"] > 1 and scaler["_growth_tracker"] > 0
        else:
            assert scaler == {}, "bf16 needs no scaler"
    assert max_diff(weights(one), weights(two)) < HALF_WEIGHTS
    # resumes in one process (the scaler's state included)
    train(two, cfg(2, precision), None, resume=True, progress=False)
    assert read_checkpoint(two / "checkpoints" / "last.pt")["epoch"] == 2


@pytest.fixture(scope="module")
def encoded_once(cache, tmp_path_factory) -> tuple[Path, np.ndarray, np.ndarray]:
    """A trained run and its 1-process latents, stored in row chunks of 64 (5 chunks for 320 images)."""
    run = fresh(cache, tmp_path_factory.mktemp("enc") / "run")
    train(run, cfg(1), MODEL, progress=False)
    mp = pytest.MonkeyPatch()
    mp.setattr(encode_module, "chunk_rows", lambda d: 64)
    try:
        encode(run, device="cpu", progress=False)
    finally:
        mp.undo()
    store = open_latents(run)
    z, mse = store["z"][:], store["recon_mse"][:]
    shutil.rmtree(run / "latents.zarr")
    return run, z, mse


def test_two_rank_encode_equals_one_process_bit_for_bit(encoded_once, tmp_path):
    src, z, mse = encoded_once
    run = tmp_path / "run"
    shutil.copytree(src, run)
    audit = tmp_path / "audit"
    attrs = on_ranks("encode", {"run_dir": str(run), "device": "cpu", "progress": False},
                     f"chunk-rows:64,audit:{audit}")
    store = open_latents(run)
    assert attrs["complete"] and store["z"].chunks[0] == 64
    assert np.array_equal(store["z"][:], z) and np.array_equal(store["recon_mse"][:], mse)
    assert sorted(zarr.open_group(run / "latents.zarr").attrs["chunks_done"]) == [0, 1, 2, 3, 4]
    written = (tmp_path / "audit.1").read_text().splitlines()
    opened = [w for w in written if w.startswith("open") and "latents.zarr" in w]
    parts = [Path(w.split(" ", 1)[1]).relative_to(run.resolve() / "latents.zarr").parts for w in opened]
    chunks = {(p[0], p[1], p[2].split(".")[0]) for p in parts}  # zarr writes "3.<uuid>.partial", then renames
    # rank 1 took the contiguous chunks 3, 4 of z and recon_mse, and nothing else (no metadata, no attributes)
    assert chunks == {("z", "c", "3"), ("z", "c", "4"), ("recon_mse", "c", "3"), ("recon_mse", "c", "4")}, chunks


def test_interrupted_two_rank_encode_resumes_with_any_ranks(encoded_once, tmp_path):
    src, z, mse = encoded_once
    run = tmp_path / "run"
    shutil.copytree(src, run)
    kwargs = {"run_dir": str(run), "device": "cpu", "progress": False}
    with pytest.raises(RankFailed, match="rank 1 failed: RuntimeError: planted failure on rank 1 after 1 blocks"):
        on_ranks("encode", kwargs, "chunk-rows:64,encode-raise:1:1")
    attrs = dict(zarr.open_group(run / "latents.zarr").attrs)
    assert not attrs["complete"] and attrs["chunks_done"] == [0, 3], "round 1: rank 0 chunk 0, rank 1 chunk 3"
    done = {}
    real = encode_module.encode_block

    def counting(model, block, *a):
        done[len(done)] = len(block)
        return real(model, block, *a)

    mp = pytest.MonkeyPatch()
    mp.setattr(encode_module, "encode_block", counting)
    try:
        encode(run, device="cpu", progress=False)  # one process finishes what two began
    finally:
        mp.undo()
    assert len(done) == 3, "only chunks 1, 2 and 4 are encoded again"
    store = open_latents(run)
    assert np.array_equal(store["z"][:], z) and np.array_equal(store["recon_mse"][:], mse)


def test_external_torchrun_over_two_nodes_runs_the_same_training(cache, two_rank_epoch, tmp_path):
    """The multi-machine command (engine/model/__init__.py, README's scale-out), as two torchrun agents (two
    'nodes' of one rank) meeting at a c10d endpoint: the same zspace train, the same weights as --nproc 2, and only
    rank 0 speaks."""
    import socket

    run = fresh(cache, tmp_path / "run")
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
           "--rdzv-backend", "c10d", "--rdzv-endpoint", f"localhost:{port}", "--rdzv-id", "zspace-test",
           "--no-python", "--", "zspace", "train", "--run", str(run), "--epochs", "1", "--batch-size", "16",
           "--z-dim", "16", "--widths", "8,16,16,16", "--seed", "3"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    nodes = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    outs = [p.communicate(timeout=240) for p in nodes]
    assert [p.returncode for p in nodes] == [0, 0], [o[1][-2000:] for o in outs]
    printed = [o[0] for o in outs if o[0].strip()]
    assert len(printed) == 1 and json.loads(printed[0])["epoch"] == 1, "rank 0 alone prints the result"
    assert max_diff(weights(run), weights(two_rank_epoch[0])) == 0.0


def test_the_cause_is_told_from_its_echoes(tmp_path):
    """torchrun reports every failed rank with whole-second timestamps; the rank that raised is the cause even
    when torchrun's SIGTERM ended it, not the rank that lost its peer, nor one only stopped."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    from engine.model.launch import _rank_failed

    def failure(rank, exitcode, message):
        path = tmp_path / f"error{len(list(tmp_path.iterdir()))}-{rank}.json"
        if message:
            path.write_text(json.dumps({"message": {"message": message, "extraInfo": {
                "py_callstack": f"Traceback ...\n{message}\n", "timestamp": "1796192722"}}}))
        return ProcessFailure(local_rank=rank, pid=100 + rank, exitcode=exitcode, error_file=str(path))

    lost = "RuntimeError: [gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:43941."
    cases = [({0: failure(0, 1, lost), 1: failure(1, -15, "RuntimeError: planted")}, "rank 1 failed: RuntimeError: planted"),
             ({0: failure(0, -15, ""), 1: failure(1, -9, "")}, "rank 1 failed: killed by signal 9"),
             ({0: failure(0, 2, "ValueError: bad batch"), 1: failure(1, 2, "ValueError: bad batch")}, "bad batch (ranks 0, 1)")]
    for failures, expected in cases:
        err = _rank_failed("train", ChildFailedError("zspace", failures))
        assert str(err).startswith(expected), (str(err), expected)
