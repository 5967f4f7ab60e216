"""The analysis stages on a Dask cluster (a LocalCluster of 2 worker processes) against the same stages in process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

pytest.importorskip("dask.distributed", reason="dask[distributed] (the test extra) is not installed")

from engine.analysis.blockwise import knn_graph_on  # noqa: E402
from engine.analysis.cluster import open_cluster  # noqa: E402
from engine.analysis.config import StatsConfig, StructureConfig, TSNEConfig  # noqa: E402
from engine.analysis.stats import compute_stats  # noqa: E402
from engine.analysis.structure import compute_structure  # noqa: E402
from engine.analysis.tsne import compute_tsne  # noqa: E402
from engine.latents.importer import import_latents  # noqa: E402
from kernels.selfjoin import knn_self_join  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def cluster():
    with open_cluster("local:2", progress=False) as c:
        assert c.workers == 2
        yield c


def latent_run(where: Path, z: np.ndarray) -> Path:
    np.save(where.with_suffix(".npy"), z)
    import_latents(where.with_suffix(".npy"), where, progress=False)
    return where


def planted(n: int = 6000, d: int = 32, seed: int = 7) -> np.ndarray:
    """A cylinder (a 2-D surface) in 3 of 32 dimensions, rotated, with small noise: its fitted normal (the null)
    fills the 3-D ellipsoid around it instead, so the two differ in local dimension and voids."""
    rng = np.random.default_rng(seed)
    t = rng.uniform(0, 2 * np.pi, n)
    core = np.stack([4 * np.cos(t), 4 * np.sin(t), rng.standard_normal(n)], 1)
    basis = np.linalg.qr(rng.standard_normal((d, 3)))[0].T
    return (core @ basis + 0.05 * rng.standard_normal((n, d))).astype("f4")


def assert_same_graph(d1, i1, d0, i0, z: np.ndarray, swaps: float = 1e-3) -> None:
    """Two exact kNN graphs of ``z`` agree to float32's rounding of |a|^2 + |b|^2 - 2 a.b, which depends on how
    BLAS splits the sums (tile shapes, threads, the CPU's kernel): squared distances to 32 eps max |x|^2, and
    neighbours swapped only where that rounding can swap them (rarely)."""
    tol = 32 * np.finfo(np.float32).eps * float((z.astype(np.float64) ** 2).sum(1).max())
    err = np.abs(d1.astype(np.float64) ** 2 - d0.astype(np.float64) ** 2).max()
    assert err <= tol, f"squared distances differ by {err:.2e}, more than float32 rounding ({tol:.2e})"
    assert (i1 != i0).mean() < swaps


def assert_same_stats(one: Path, a: dict, two: Path, b: dict) -> None:
    """Stats of the same cloud in runs ``one`` and ``two`` agree: co-moments to 1e-9 relative; histograms, radii,
    the full normality test and the PCA coordinates in latents.zarr exactly."""
    cov_a, cov_b = (np.load(r / "stats" / "covariance.npy") for r in (one, two))
    np.testing.assert_allclose(cov_b, cov_a, rtol=1e-9, atol=0)
    da, db = (np.load(r / "stats" / "density.npz") for r in (one, two))
    for key in da.files:
        assert np.array_equal(da[key], db[key]), f"{key} differs"  # histograms exactly
    pa, pb = (zarr.open_group(r / "latents.zarr")["pca"][:] for r in (one, two))
    assert np.array_equal(pa, pb), "PCA coordinates written by the workers equal those written here"
    assert a["normality"]["full"] == b["normality"]["full"] and a["radius"] == b["radius"]


@pytest.mark.parametrize("hold", [True, False], ids=["blocks-held", "blocks-read-per-pass"])
def test_stats_on_the_cluster_equal_in_process(cluster, tmp_path, hold):
    z = planted(9000)
    one, two = latent_run(tmp_path / "one", z), latent_run(tmp_path / "two", z)
    cfg = StatsConfig(block_rows=2048, hold_blocks=hold)  # 5 blocks: the merges of several tasks are exercised
    a = compute_stats(one, cfg, progress=False)
    b = compute_stats(two, cfg, progress=False, cluster=cluster)
    assert_same_stats(one, a, two, b)
    mean_a, mean_b = (np.array([c["mean"] for c in r["components"]]) for r in (a, b))
    np.testing.assert_allclose(mean_b, mean_a, rtol=1e-9, atol=0)
    cov_b = np.load(two / "stats" / "covariance.npy")
    # and against an independent reference: numpy's covariance of all rows
    np.testing.assert_allclose(cov_b, np.cov(z.astype(np.float64), rowvar=False), rtol=1e-6, atol=1e-9)


def block_sum(x: np.ndarray, start: int) -> tuple[int, np.ndarray]:
    return start, x.astype(np.float64).sum(0)


def test_held_blocks_are_shared_out_evenly_and_leave_when_dropped(cluster, tmp_path, monkeypatch):
    import gc

    from dask.distributed import futures_of

    z = planted(9000)
    run = latent_run(tmp_path / "run", z)
    blocks = cluster.row_blocks(run / "latents.zarr" / "z", 2048)  # 5 blocks, 1 MB: held by default
    assert blocks.held and len(blocks.blocks) == 5
    futures = [f for b in blocks.blocks for f in futures_of(b)]
    keys = [f.key for f in futures]
    workers = sorted(cluster.client.scheduler_info(n_workers=-1)["workers"])
    cluster.client.gather(futures)  # read
    who = cluster.client.who_has(futures)
    assert [tuple(who[k]) for k in keys] == [(workers[0],)] * 3 + [(workers[1],)] * 2
    # mapped twice, the same answer each time, and that of numpy
    for _ in range(2):
        got = blocks.map(block_sum)
        assert [s for s, _ in got] == [0, 2048, 4096, 6144, 8192]
        np.testing.assert_allclose(sum(v for _, v in got), z.astype(np.float64).sum(0), rtol=1e-12)
    del blocks, who, futures
    gc.collect()
    deadline = time.monotonic() + 10
    while any(set(keys) & set(ks) for ks in cluster.client.has_what().values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(set(keys) & set(ks) for ks in cluster.client.has_what().values()), "held blocks not released"
    # where the array would take more than a third of the workers' memory, each pass reads it again
    monkeypatch.setattr(type(cluster), "memory", lambda self: 3 * z.nbytes - 1)
    unheld = cluster.row_blocks(run / "latents.zarr" / "z", 2048)
    assert not unheld.held and not futures_of(unheld.blocks)


def test_knn_graph_in_tiles_equals_the_self_join(cluster, tmp_path):
    z = planted(5000)
    run = latent_run(tmp_path / "run", z)
    d0, i0 = knn_self_join(z, 16)
    d1, i1 = knn_graph_on(cluster, run / "latents.zarr" / "z", len(z), 16, block=1300)  # 4 blocks, 10 tiles
    assert_same_graph(d1, i1, d0, i0, z)


def test_knn_graph_in_faiss_tiles_equals_the_self_join(cluster, tmp_path):
    z = planted(3000)
    z[7] = z[3]  # an exact duplicate: each is the other's nearest, at distance 0, never itself
    run = latent_run(tmp_path / "run", z)
    d0, i0 = knn_self_join(z, 12)
    d1, i1 = knn_graph_on(cluster, run / "latents.zarr" / "z", len(z), 12, block=1100, tiles="faiss")  # 9 tiles
    assert (i1 != np.arange(len(z))[:, None]).all(), "no row is its own neighbour"
    assert i1[3, 0] == 7 and i1[7, 0] == 3 and d1[3, 0] < 1e-2
    # both compute |q|^2 + |p|^2 - 2 q.p in float32: distances agree to its rounding, which near 0 is
    # sqrt(eps |q|^2) ~ 3e-3 here (the duplicate: 0 by FAISS, 0.0024 by the join)
    np.testing.assert_allclose(d1, d0, rtol=1e-4, atol=5e-3)
    differ = i1 != i0
    assert np.allclose(d0[differ], d1[differ], rtol=1e-4, atol=5e-3) and differ.mean() < 1e-2


def test_structure_verdicts_on_the_cluster_equal_in_process(cluster, tmp_path):
    z = planted(5000)
    one, two = latent_run(tmp_path / "one", z), latent_run(tmp_path / "two", z)
    cfg = StructureConfig(k=16, graph_k=30, void_probes=1000, bootstrap=50)
    a = compute_structure(one, cfg, progress=False)
    b = compute_structure(two, cfg, progress=False, cluster=cluster)
    for name, sa in a["statistics"].items():
        sb = b["statistics"][name]
        assert sb["differs"] == sa["differs"], (name, sa["verdict"], sb["verdict"])
        assert sb["data"] == pytest.approx(sa["data"], rel=1e-4), name  # the data side is the same computation
    assert a["statistics"]["local_dimension"]["differs"], "the planted cylinder is not its null"
    ga, gb = (zarr.open_group(r / "latents.zarr")["knn_indices"][:] for r in (one, two))
    assert (ga != gb).mean() < 1e-3
    assert not (two / "structure" / "null.zarr").exists(), "the null cloud on shared storage is removed"
    assert [p["plane"] for p in a["planes"]] == [p["plane"] for p in b["planes"]]
    for pa, pb in zip(a["planes"], b["planes"]):
        assert [w["points_data"] for w in pa["windows"]] == [w["points_data"] for w in pb["windows"]]


def test_tsne_places_held_out_points_in_their_cluster(cluster, tmp_path):
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((5, 32)) * 8
    labels = rng.integers(0, 5, 2500)
    z = (centres[labels] + rng.standard_normal((2500, 32))).astype("f4")
    run = latent_run(tmp_path / "run", z)
    cfg = TSNEConfig(n=2500, fit_n=1200, n_iter=400, perplexity=20, null=False, n_jobs=1)
    res = compute_tsne(run, cfg, progress=False, cluster=cluster)
    assert res["n"] == 2500 and res["n_fitted"] == 1200 and res["seconds"]["placed"]["n"] == 1300
    with np.load(run / "tsne" / "embedding.npz") as f:
        rows, emb = f["rows"], f["embedding"]
    assert np.array_equal(rows, np.arange(2500)) and np.isfinite(emb).all()
    # every point by its nearest other point in the map: placed and fitted alike must sit in their cluster
    d2 = ((emb[:, None, :] - emb[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d2, np.inf)
    same = labels[d2.argmin(1)] == labels
    assert same.mean() > 0.98


def test_a_killed_worker_is_replaced_and_the_graph_is_unchanged(cluster, tmp_path):
    z = planted(6000)
    run = latent_run(tmp_path / "run", z)
    ref = knn_self_join(z, 8)
    out = {}
    job = threading.Thread(target=lambda: out.update(g=knn_graph_on(cluster, run / "latents.zarr" / "z", len(z), 8,
                                                                    block=300)))  # 210 tiles
    job.start()
    deadline = time.time() + 60
    while not any(cluster.client.processing().values()) and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    busy = [w for w, tasks in cluster.client.processing().items() if tasks]
    pids = cluster.client.run(os.getpid, workers=busy[:1])
    os.kill(next(iter(pids.values())), signal.SIGKILL)
    job.join(timeout=240)
    assert "g" in out, "the graph finished after the worker died"
    assert_same_graph(*out["g"], *ref, z)
    deadline = time.time() + 30
    while cluster.workers < 2 and time.time() < deadline:  # the nanny starts a new worker
        time.sleep(0.2)
    assert cluster.workers == 2


def test_a_worker_killed_between_stats_passes_loses_its_held_blocks_and_the_stats_are_unchanged(
        cluster, tmp_path, monkeypatch):
    import engine.analysis.stats as stats_module

    z = planted(9000)
    one, two = latent_run(tmp_path / "one", z), latent_run(tmp_path / "two", z)
    cfg = StatsConfig(block_rows=2048, hold_blocks=True, figures=False)
    ref = compute_stats(one, cfg, progress=False)
    second_pass = stats_module._projection_pass

    def kill_a_worker_first(*args, **kwargs):  # after pass 1: half the held blocks die with their worker
        victim = sorted(cluster.client.scheduler_info(n_workers=-1)["workers"])[0]
        os.kill(next(iter(cluster.client.run(os.getpid, workers=[victim]).values())), signal.SIGKILL)
        deadline = time.time() + 30
        while victim in cluster.client.scheduler_info(n_workers=-1)["workers"] and time.time() < deadline:
            time.sleep(0.1)
        return second_pass(*args, **kwargs)

    monkeypatch.setattr(stats_module, "_projection_pass", kill_a_worker_first)
    out = {}
    job = threading.Thread(target=lambda: out.update(s=compute_stats(two, cfg, progress=False, cluster=cluster)))
    job.start()
    job.join(timeout=180)
    assert "s" in out, "stats did not finish after a worker holding blocks died"
    assert_same_stats(one, ref, two, out["s"])
    assert out["s"]["normality"] == ref["normality"]
    deadline = time.time() + 30
    while cluster.workers < 2 and time.time() < deadline:  # the nanny starts a new worker
        time.sleep(0.2)
    assert cluster.workers == 2


def test_a_misspelt_local_spec_is_named_at_once():
    from engine.analysis.cluster import parse_spec

    for typo in ("lcoal:2", "locl:2", "loacl:4"):
        with pytest.raises(ValueError, match=f"did you mean local:{typo[-1]}"):
            parse_spec(typo)
    assert parse_spec("local:2") == ("local", 2)
    for address in ("localhost:8786", "tcp://localhost:8786", "tcp://lcoal:8786", "node17:8786"):
        assert parse_spec(address) == ("address", address)


def test_dask_missing_or_unreachable_is_one_line(tmp_path):
    run = latent_run(tmp_path / "run", planted(200))
    code = ("import sys; sys.modules['dask'] = sys.modules['distributed'] = sys.modules['dask.distributed'] = None; "
            f"from cli import main; sys.exit(main(['stats', '--run', {str(run)!r}, '--dask', 'local:2']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == ("zspace stats: error: --dask needs Dask, which is not installed: "
                                                   "pip install -e '.[dask]' (or pip install 'dask[distributed]')")
    from cli import main

    assert main(["stats", "--run", str(run), "--dask", "local:0"]) == 2
    assert main(["stats", "--run", str(run), "--dask", "tcp://127.0.0.1:1"]) == 2
    assert main(["structure", "--run", str(run), "--tiles", "faiss"]) == 2  # --tiles without --dask: not ignored
    assert not (run / "structure").exists()


def test_a_store_the_workers_cannot_read_is_named(cluster, tmp_path):
    with pytest.raises(ValueError, match="cannot read .*every worker can read"):
        cluster.check_readable(tmp_path / "elsewhere" / "latents.zarr")


def test_a_scheduler_without_workers_is_one_line(monkeypatch):
    from dask.distributed import LocalCluster

    import engine.analysis.cluster as cluster_module

    monkeypatch.setattr(cluster_module, "WORKER_WAIT_S", 1)
    with LocalCluster(n_workers=0, protocol="tcp", processes=False, dashboard_address=":0") as empty:
        with pytest.raises(ValueError, match="has no workers .*dask worker tcp://"):
            with open_cluster(empty.scheduler_address):
                pass


def test_the_command_on_a_local_cluster_keeps_stdout_for_its_json(tmp_path):
    """Progress and the scheduler line go to stderr (a line a minute and one at the end when it is not a
    terminal), so ``zspace stats --dask local:2 > out.json`` is the result alone."""
    import json

    run = latent_run(tmp_path / "run", planted(3000))
    proc = subprocess.run([sys.executable, "-m", "cli", "stats", "--run", str(run), "--dask", "local:2"],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["stats"].endswith("stats.json")
    assert "dask: scheduler tcp://" in proc.stderr and "2 workers" in proc.stderr
    assert "1/1 done" in proc.stderr or "done," in proc.stderr


def _worker_env() -> tuple[str | None, str | None]:
    return os.environ.get("OMP_NUM_THREADS"), os.environ.get("MALLOC_TRIM_THRESHOLD_")


def test_local_workers_get_their_share_of_the_cores(monkeypatch):
    """Each of N local workers gets cores // N threads even where this process's environment says otherwise
    (the nanny would pass that on: 2 workers x 2 numba threads on 2 cores), and dask's memory trimming stays."""
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    with open_cluster("local:2", progress=False) as c:
        seen = set(c.client.run(_worker_env).values())
    assert seen == {(str(max(1, (os.cpu_count() or 1) // 2)), "65536")}
    assert os.environ["OMP_NUM_THREADS"] == "7", "this process's environment is restored"
