"""The explore page: what it carries of each point against numpy, sklearn and the run's own images, and the page
itself in a real headless Chromium opened from disk with the network off."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from PIL import Image

from engine.analysis.config import StructureConfig, TSNEConfig
from engine.analysis.structure import compute_structure
from engine.analysis.tsne import compute_tsne
from engine.deps import DependencyError
from engine.explore.bundle import atlas_of, thumbnail
from engine.explore.columns import gather
from engine.explore.config import ExploreConfig
from engine.explore.page import explore
from engine.generation.generate import decode_with, load_model
from bench.browser import chromium
from tests.test_report import requires_chromium

pytest.importorskip("bokeh", reason="the explore page needs Bokeh: pip install -e '.[test]'")


@pytest.fixture(scope="module")
def explored(trained_run, tmp_path_factory) -> Path:
    """trained_run (300 synthetic faces at 64 px, z 32) with its kNN graph, a t-SNE map of 240 of its points (so
    page positions are not latent rows) and the page."""
    run = tmp_path_factory.mktemp("explored") / "run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("generate", "facemap", "report", "explore"))
    compute_structure(run, StructureConfig(k=8, graph_k=12, void_probes=200, bootstrap=10, device="cpu"), progress=False)
    compute_tsne(run, TSNEConfig(n=240, n_iter=300, null=True), progress=False)
    explore(run, ExploreConfig(thumb=32, atlas=8, chunk=128, pcs=6, neighbours=10, device="cpu"), progress=False)
    return run


def _latents(run: Path) -> zarr.Group:
    return zarr.open_group(run / "latents.zarr", mode="r")


def test_points_carry_the_clouds_numbers(explored):
    cfg = ExploreConfig(pcs=6, neighbours=10)
    pts = gather(explored, cfg)
    g = _latents(explored)
    z = np.asarray(g["z"][:], np.float64)
    rows = np.load(explored / "tsne" / "embedding.npz")["rows"]
    assert pts.n == len(rows) == 240 < len(z) and np.array_equal(pts.rows, rows)
    zr = z[rows]
    col = {c.name: c for c in pts.colours}
    np.testing.assert_allclose(col["radius"].values, np.linalg.norm(zr, axis=1), rtol=1e-5)
    d = zr - z.mean(axis=0)
    m2 = np.einsum("ij,jk,ik->i", d, np.linalg.inv(np.cov(z, rowvar=False)), d)
    np.testing.assert_allclose(col["mahalanobis"].values, np.sqrt(m2), rtol=1e-4)
    from sklearn.decomposition import PCA

    ref = PCA(n_components=6).fit(z).transform(zr)
    ours = pts.layouts["pca"].astype(np.float64)
    signs = np.sign((ref * ours).sum(axis=0))
    np.testing.assert_allclose(ours * signs, ref, atol=1e-3 * np.abs(ref).max())
    two_widest = np.argsort(-z.std(axis=0))[:2]  # no stats stage in this run: the two widest components
    np.testing.assert_array_equal(pts.layouts["dominant"], zr[:, two_widest].astype(np.float32))
    knn = np.asarray(g["knn_indices"][:])[rows][:, :10]
    on = pts.neighbours >= 0
    np.testing.assert_array_equal(rows[pts.neighbours[on]], knn[on])  # page positions of the same latents
    assert not np.isin(knn[~on], rows).any() and on.mean() > 0.5
    np.testing.assert_array_equal(col["local_dim"].values, np.asarray(g["local_dim"][:])[rows])
    assert pts.attributes, "synthetic faces plant labels; the page colours by them"
    stored = np.asarray(zarr.open_group(explored / "images.zarr", mode="r")["attributes"][:])[rows]
    np.testing.assert_array_equal(pts.labels, stored)


def test_a_smaller_page_takes_a_seeded_sample_of_the_map(explored):
    pts = gather(explored, ExploreConfig(n=50, seed=3))
    emb = np.load(explored / "tsne" / "embedding.npz")
    assert pts.n == 50 and np.all(np.diff(pts.rows) > 0)
    where = np.searchsorted(emb["rows"], pts.rows)
    np.testing.assert_array_equal(pts.layouts["tsne"], emb["embedding"][where])
    np.testing.assert_array_equal(gather(explored, ExploreConfig(n=50, seed=3)).rows, pts.rows)
    # the null map beside it: as many points, each a distinct point of the null t-SNE map
    null = pts.layouts["tsne_null"]
    assert len(emb["null_embedding"]) > 50 and null.shape == (50, 2)
    assert len(np.unique(null, axis=0)) == 50 and all((emb["null_embedding"] == p).all(axis=1).any() for p in null)
    # neighbours that did not make the sample are -1, the others are page positions of the same latents
    full = np.asarray(_latents(explored)["knn_indices"][:])[pts.rows][:, : pts.neighbours.shape[1]]
    on = pts.neighbours >= 0
    np.testing.assert_array_equal(pts.rows[pts.neighbours[on]], full[on])
    assert not np.isin(full[~on], pts.rows).any()


def test_atlas_puts_thumbnail_i_at_column_i_mod_side():
    thumbs = np.stack([np.full((4, 4, 3), 10 * i, np.uint8) for i in range(7)])
    atlas = atlas_of(thumbs, 3)
    assert atlas.shape == (12, 12, 3)  # 3 rows of 3, the last one partly empty
    for i in range(7):
        r, c = divmod(i, 3)
        assert (atlas[4 * r : 4 * r + 4, 4 * c : 4 * c + 4] == 10 * i).all()
    assert (atlas[8:, 4:] == 0).all()


def _tile(run: Path, kind: str, i: int) -> np.ndarray:
    info = json.loads((run / "explore" / "explore.json").read_text())
    t, per = info["thumb"], info["config"]["atlas"]
    a, k = divmod(i, per * per)
    r, c = divmod(k, per)
    atlas = np.asarray(Image.open(run / "explore" / "thumbs" / f"{kind}_{a:04d}.jpg").convert("RGB"), np.float64)
    return atlas[r * t : (r + 1) * t, c * t : (c + 1) * t]


def test_thumbnails_are_the_runs_images_and_reconstructions(explored):
    images = np.asarray(zarr.open_group(explored / "images.zarr", mode="r")["images"][:])
    rows = np.load(explored / "tsne" / "embedding.npz")["rows"]
    model, dev, prec = load_model(explored, device="cpu")
    z = np.asarray(_latents(explored)["z"][:], np.float32)
    rng = np.random.default_rng(0)
    for i in (0, 63, 64, 239):  # first, last of an atlas, first of the next, the last point
        tile = _tile(explored, "img", i)
        ref = np.asarray(Image.fromarray(images[rows[i]]).resize((32, 32), Image.Resampling.BOX), np.float64)
        err = np.abs(tile - ref).mean()
        assert err < 6, f"point {i}: mean |diff| {err:.1f} against its own image"  # JPEG at quality 88
        others = [np.abs(tile - np.asarray(Image.fromarray(images[j]).resize((32, 32), Image.Resampling.BOX),
                                           np.float64)).mean() for j in rng.choice(len(images), 20) if j != rows[i]]
        assert err < min(others) / 2
        rec = decode_with(model, z[rows[i] : rows[i] + 1], dev, prec)[0]
        assert np.abs(_tile(explored, "rec", i) - np.asarray(thumbnail(rec, 32), np.float64)).mean() < 6


def test_without_bokeh_explore_says_what_to_install(explored, monkeypatch):
    monkeypatch.setitem(sys.modules, "bokeh", None)  # import bokeh now raises ImportError
    with pytest.raises(DependencyError, match=r"pip install 'zspace\[explore\]'"):
        explore(explored, progress=False)
    assert (explored / "explore" / "index.html").exists(), "the page already written is kept"


def test_bad_options_are_refused():
    for kw, match in (({"thumb": 65}, "thumb"), ({"pcs": 1}, "pcs"), ({"n": 1}, "n must")):
        with pytest.raises(ValueError, match=match):
            ExploreConfig(**kw)


def _numpy_decode(dec: dict, z: np.ndarray) -> np.ndarray:
    """The page's decoder written again in numpy from decoder.js's arrays: dense layer, then per kernel tap the
    scatter out[iy * s - pad + ky, ix * s - pad + kx] += in[iy, ix] @ w[:, ky, kx], activations. HWC in [0, 1]."""
    import base64

    def a(x):
        kinds = {"f4": np.float32}
        return np.frombuffer(base64.b64decode(x["b64"]), kinds[x["dtype"]]).reshape(x["shape"]).astype(np.float64)

    side, c = dec["side"], dec["channels"]
    h = (a(dec["dense_w"]) @ z + a(dec["dense_b"])).reshape(c, side, side).transpose(1, 2, 0)
    for layer in dec["layers"]:
        w, b, k, s_, pad = a(layer["w"]), a(layer["b"]), layer["k"], layer["stride"], layer["pad"]
        hi = h.shape[0]
        out = np.zeros((hi * s_ + k, hi * s_ + k, layer["cout"]))  # room for every tap, cropped below
        for ky in range(k):
            for kx in range(k):
                out[ky : ky + hi * s_ : s_, kx : kx + hi * s_ : s_] += h @ w[:, ky, kx]
        out = out[pad : pad + hi * s_, pad : pad + hi * s_] + b
        h = np.where(out < 0, out * dec["leak"], out) if layer["act"] == "leaky" else 1 / (1 + np.exp(-out))
    return h


def test_the_folded_decoder_is_the_models(explored):
    from engine.explore.bundle import folded_decoder

    model, dev, prec = load_model(explored, device="cpu")
    dec = json.loads(json.dumps(folded_decoder(model)))
    z = np.asarray(_latents(explored)["z"][:5], np.float64)
    import torch

    with torch.no_grad():
        ref = model.decode(torch.from_numpy(z).float()).permute(0, 2, 3, 1).double().numpy()
    for zi, r in zip(z, ref):
        np.testing.assert_allclose(_numpy_decode(dec, zi), r, atol=2e-5)
    text = (explored / "explore" / "decoder.js").read_text()
    assert json.loads(text[text.index("=") + 1 : text.rindex(";")])["dense_w"] == dec["dense_w"]


def _copy(run: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(run, out)
    return out


def test_points_the_graph_left_out_have_no_neighbours(explored, tmp_path):
    run = _copy(explored, tmp_path)
    knn = zarr.open_group(run / "latents.zarr", mode="r+")["knn_indices"]
    rows = np.load(run / "tsne" / "embedding.npz")["rows"]
    knn[int(rows[3])] = -1  # as structure --sample leaves the rows it did not analyse
    pts = gather(run, ExploreConfig())
    assert (pts.neighbours[3] == -1).all() and (pts.neighbours[4] >= 0).any()
    assert not (pts.neighbours == pts.n - 1).all(axis=1).any()


def test_a_map_of_other_latents_is_left_out(explored, tmp_path):
    run = _copy(explored, tmp_path)
    emb = dict(np.load(run / "tsne" / "embedding.npz"))
    emb["rows"] = emb["rows"] + 1000  # rows latents.zarr does not have
    np.savez(run / "tsne" / "embedding.npz", **emb)
    pts = gather(run, ExploreConfig())
    assert "tsne" not in pts.layouts and pts.n == 300 and np.array_equal(pts.rows, np.arange(300))


def test_imported_latents_get_a_page_without_decoder_or_images(explored, tmp_path):
    from engine.latents.importer import import_latents

    run = _copy(explored, tmp_path)
    shutil.rmtree(run / "tsne")
    z = np.random.default_rng(0).normal(size=(200, 32)).astype(np.float32)
    np.save(tmp_path / "z.npy", z)
    import_latents(tmp_path / "z.npy", run, overwrite=True, progress=False)
    res = explore(run, ExploreConfig(pcs=4, atlas=8), progress=False)
    assert res["n"] == 200 and not res["decoder"] and not res["images"] and res["attributes"] == []
    assert (run / "explore" / "decoder.js").read_text() == "window.ZSPACE_DECODER = null;\n"
    assert not list((run / "explore" / "thumbs").iterdir())
    radius = gather(run, ExploreConfig(pcs=4)).colours[0]
    np.testing.assert_allclose(radius.values, np.linalg.norm(z, axis=1), rtol=1e-5)


def test_nan_latents_are_named(explored, tmp_path):
    run = _copy(explored, tmp_path)
    z = zarr.open_group(run / "latents.zarr", mode="r+")["z"]
    row = np.asarray(z[7])
    row[2] = np.nan
    z[7] = row
    with pytest.raises(ValueError, match="latent row 7 holds NaN"):
        gather(run, ExploreConfig())
    assert (run / "explore" / "index.html").exists()


# ---- the page in a real browser ----

def _browser():
    """WebGL through SwiftShader (no GPU here); the network off and every host resolving to nothing: the page must
    need no network."""
    pytest.importorskip("selenium.webdriver", reason="selenium not installed (pip install -e '.[test]')")
    return chromium(webgl=True, offline=True)


def _open(driver, run: Path, query: str = "") -> None:
    driver.get((run / "explore" / "index.html").resolve().as_uri() + query)
    for _ in range(300):
        if driver.execute_script("return !!(window.zspace && window.zspace.ready)"):
            return
        time.sleep(0.1)
    raise AssertionError("the page never became ready: " + str(driver.get_log("browser")))


def _pointer(driver, x: float, y: float, click: bool = False) -> None:
    from selenium.webdriver.common.actions.action_builder import ActionBuilder

    ab = ActionBuilder(driver)
    ab.pointer_action.move_to_location(int(round(x)), int(round(y)))
    if click:
        ab.pointer_action.click()
    ab.perform()


def _drag(driver, x0: float, y0: float, w: float, h: float) -> None:
    """Drag the box select from (35%, 30%) to (65%, 70%) of the frame. WebDriver's synthetic drag is now and then
    lost while the software renderer is busy with a frame (no selection geometry reaches the page): up to three
    tries, each checked on the page's count of the geometries Bokeh reported."""
    from selenium.webdriver.common.actions.action_builder import ActionBuilder

    for _ in range(3):
        before = driver.execute_script("return zspace.state.geometries || 0")
        ab = ActionBuilder(driver)
        ab.pointer_action.move_to_location(int(x0 + 0.35 * w), int(y0 + 0.3 * h)).pointer_down()
        ab.pointer_action.move_to_location(int(x0 + 0.5 * w), int(y0 + 0.5 * h))
        ab.pointer_action.move_to_location(int(x0 + 0.65 * w), int(y0 + 0.7 * h)).pointer_up()
        ab.perform()
        for _ in range(30):
            if driver.execute_script("return zspace.state.geometries || 0") > before:
                return
            time.sleep(0.1)
    raise AssertionError("three box drags reached the page as no selection")


def _wait(driver, js: str, timeout: float = 10.0):
    """The first truthy value of ``js`` (a script that returns), polled until ``timeout`` s; else AssertionError."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        value = driver.execute_script(js)
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"not true after {timeout} s: {js}")


def _text(driver, element_id: str) -> str:
    return driver.execute_script(f"const e = document.getElementById('{element_id}'); return e ? e.textContent : null")


def _pixels(driver, canvas_js: str) -> np.ndarray:
    data = driver.execute_script(f"const c = {canvas_js}; return Array.from(c.getContext('2d')"
                                 f".getImageData(0, 0, c.width, c.height).data)")
    side = int(round((len(data) / 4) ** 0.5))
    return np.asarray(data, np.float64).reshape(side, side, 4)[..., :3]


def _torch_decode(run: Path, z: np.ndarray) -> np.ndarray:
    model, dev, prec = load_model(run, device="cpu")
    return decode_with(model, np.asarray(z, np.float32).reshape(1, -1), dev, prec)[0].astype(np.float64)


@requires_chromium
@pytest.mark.parametrize("backend", ["webgl", "canvas"])
def test_page_in_a_real_browser(explored, backend):
    info = json.loads((explored / "explore" / "explore.json").read_text())
    ids = [str(i) for i in np.asarray(_latents(explored)["ids"][:])]
    rows = np.load(explored / "tsne" / "embedding.npz")["rows"]
    z16 = np.asarray(_latents(explored)["z"][:], np.float32)[rows].astype(np.float16).astype(np.float32)
    knn = np.asarray(_latents(explored)["knn_indices"][:])[rows]
    html_text = (explored / "explore" / "index.html").read_text()
    assert "http://" not in html_text.replace("http://www.w3.org", "") and "https://" not in html_text
    driver = _browser()
    try:
        _open(driver, explored, "?backend=" + backend)
        # every point drawn, by the backend asked for
        n = driver.execute_script("return Bokeh.documents[0].get_model_by_name('points_source').data.x.length")
        assert n == info["n"] == len(rows) == 240
        assert driver.execute_script("return zspace.state.webgl") is (backend == "webgl")
        assert "240 points of 300" in _text(driver, "status")
        assert ("WebGL" if backend == "webgl" else "2D canvas") in _text(driver, "status")

        # hover a known point (the rightmost of the t-SNE map): its id, numbers and thumbnail
        i = driver.execute_script("const s = zspace.state; let b = 0; for (let i = 0; i < s.x.length; i++) "
                                  "if (s.x[i] > s.x[b]) b = i; return b;")
        p = driver.execute_script(f"return zspace.screenOf({i})")
        _pointer(driver, p["x"] - 25, p["y"])
        _pointer(driver, p["x"], p["y"])
        time.sleep(0.5)
        assert _text(driver, "hover-id") == ids[rows[i]]
        bg = driver.execute_script("return document.getElementById('hover-img').style.backgroundImage")
        thumb = driver.execute_script("return zspace.state.thumb")
        assert f"thumbs/img_{i // 64:04d}.jpg" in bg and thumb["col"] == i % 64 % 8 and thumb["row"] == i % 64 // 8
        assert driver.execute_script("const im = new Image(); im.src = arguments[0]; return im.src", thumb["src"])
        info_text = _text(driver, "hover-info")
        radius = float(np.linalg.norm(np.asarray(_latents(explored)["z"][rows[i]], np.float64)))
        shown = f"{radius:.0f}" if radius >= 100 else f"{radius:.2f}" if radius >= 1 else f"{radius:.3g}"  # as the page
        assert f"radius |z| (L2){shown}" in info_text

        # switching colour changes the legend
        legend0 = _text(driver, "legend")
        driver.execute_script("const e = document.getElementById('colour'); e.value = 'split'; "
                              "e.dispatchEvent(new Event('change'))")
        legend1 = _text(driver, "legend")
        assert legend1 != legend0 and "split" in legend1 and "train" in legend1 and "test" in legend1

        # click: the stored neighbours, highlighted and in the strip; the decoded path to the nearest, as torch
        _pointer(driver, p["x"], p["y"], click=True)
        time.sleep(1.0)
        a = driver.execute_script("return zspace.state.clicked[0]")
        strip = driver.execute_script("return Array.from(document.querySelectorAll('#neighbours .thumb'))"
                                      ".map(e => +e.dataset.i)")
        position = {int(r): k for k, r in enumerate(rows)}  # latent row -> page position, for those on the map
        expected = [position[int(j)] for j in knn[a][:10] if int(j) in position and position[int(j)] != a]
        assert strip == expected and len(strip) >= 5
        assert driver.execute_script("return Bokeh.documents[0].get_model_by_name('highlight_source')"
                                     ".data.x.length") == 1 + len(strip)
        assert driver.execute_script("return document.querySelectorAll('#path canvas').length") == 8
        first = _pixels(driver, "document.querySelector('#path canvas')")
        assert np.abs(first - _torch_decode(explored, z16[a])).max() <= 2  # the page's decoder is torch's
        last = _pixels(driver, "document.querySelectorAll('#path canvas')[7]")
        assert np.abs(last - _torch_decode(explored, z16[strip[0]])).max() <= 2

        # a box selection on the PCA plane: its size, the decoded mean of its latents and its attribute shares
        driver.execute_script("const e = document.getElementById('layout'); e.value = 'pca'; "
                              "e.dispatchEvent(new Event('change'))")
        driver.execute_script("const m = Bokeh.documents[0].get_model_by_name('map'); "
                              "m.toolbar.tools.find(t => t.type === 'BoxSelectTool').active = true;")
        x0, y0, w, h = driver.execute_script(
            "const pv = Bokeh.index.find_one(Bokeh.documents[0].get_model_by_name('map')); const f = pv.frame.bbox;"
            "const e = pv.canvas_view.events_el.getBoundingClientRect(); return [e.left + f.left, e.top + f.top, "
            "f.width, f.height]")
        _drag(driver, x0, y0, w, h)
        for _ in range(50):
            if _text(driver, "selection-size") and driver.execute_script("return !!document.getElementById('mean-face')"):
                break
            time.sleep(0.1)
        sel = driver.execute_script("return zspace.state.selection")
        xs, ys = driver.execute_script("return [Array.from(zspace.state.x), Array.from(zspace.state.y)]")
        xr = driver.execute_script("const r = Bokeh.documents[0].get_model_by_name('map'); return [r.x_range.start, "
                                   "r.x_range.end, r.y_range.start, r.y_range.end]")
        assert 5 < len(sel) < 240
        assert _text(driver, "selection-size") == f"{len(sel):,}"
        # the selected points are those inside the dragged box (data coordinates from the plot's ranges)
        bx = sorted(xr[0] + f * (xr[1] - xr[0]) for f in (0.35, 0.65))
        by = sorted(xr[3] - f * (xr[3] - xr[2]) for f in (0.3, 0.7))
        inside = {k for k in range(240) if bx[0] < xs[k] < bx[1] and by[0] < ys[k] < by[1]}
        assert len(inside ^ set(sel)) <= 0.05 * len(sel) + 2  # a pixel of slack at the box's edges
        mean = _pixels(driver, "document.getElementById('mean-face')")
        assert np.abs(mean - _torch_decode(explored, z16[sel].astype(np.float64).mean(axis=0))).max() <= 2
        labels = np.asarray(zarr.open_group(explored / "images.zarr", mode="r")["attributes"][:])[rows]
        names = zarr.open_group(explored / "images.zarr", mode="r")["attributes"].attrs["names"]
        shares = driver.execute_script("return Array.from(document.querySelectorAll('#shares tr')).slice(1)"
                                       ".map(r => Array.from(r.cells).map(c => c.textContent))")
        assert [s[0] for s in shares] == names
        for j, (_, ours, _) in enumerate(shares):
            lab = labels[sel, j]
            lab = lab[lab >= 0]
            if len(lab):  # one decimal: JavaScript rounds halves up, Python to even
                assert abs(float(ours.rstrip("%")) - 100 * lab.mean()) <= 0.05 + 1e-9, (names[j], ours)
            else:
                assert ours == "-"

        severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not severe, severe
    finally:
        driver.quit()


# ---- the stage of zspace run ----

@pytest.mark.slow  # needs finished_run: every stage once
def test_run_makes_the_page_and_the_report_links_it(finished_run):
    info = json.loads((finished_run / "explore" / "explore.json").read_text())
    n_lat = _latents(finished_run)["z"].shape[0]
    assert info["n"] == len(np.load(finished_run / "tsne" / "embedding.npz")["rows"]) and info["n"] <= n_lat
    report = (finished_run / "report" / "index.html").read_text()
    assert 'href="../explore/index.html"' in report and report.index("explore-link") < report.index("<nav>")
    state = json.loads((finished_run / "pipeline.json").read_text())
    assert state["stages"]["explore"]["finished"]


@pytest.mark.slow
def test_run_without_bokeh_leaves_explore_and_runs_the_rest(finished_run, tmp_path, monkeypatch):
    import engine.pipeline as pipeline
    from tests.conftest import TINY

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    shutil.rmtree(run / "explore")
    shutil.rmtree(run / "report")

    monkeypatch.setitem(sys.modules, "bokeh", None)  # import bokeh now raises ImportError
    res = pipeline.run(run, quick=True, device="cpu", progress=False, **TINY)
    assert res["seconds"]["explore"].startswith("not run: pip install 'zspace[explore]'")
    assert isinstance(res["seconds"]["report"], float), "the report ran again"
    assert all(v == "skipped" for k, v in res["seconds"].items() if k not in ("report", "explore"))
    assert not (run / "explore").exists()
    assert "Not made yet: the explore page" in (run / "report" / "index.html").read_text()


@requires_chromium
def test_a_large_map_draws_a_sample_in_view_and_selects_every_point(explored, tmp_path):
    """Level of detail: with draw = 100 of 240 points Bokeh gets the first 100 in view; while the ranges move, the
    first 20; zoomed in to fewer than 100, every point in view; a box selects every point inside it, drawn or not."""
    run = _copy(explored, tmp_path)
    explore(run, ExploreConfig(thumb=32, atlas=8, chunk=128, pcs=6, draw=100, device="cpu"), progress=False)
    driver = _browser()
    try:
        _open(driver, run)
        xs, ys = driver.execute_script("return [Array.from(zspace.state.x), Array.from(zspace.state.y)]")
        xs, ys = np.asarray(xs), np.asarray(ys)

        def drawn():
            return np.asarray(driver.execute_script("return Array.from(zspace.state.drawn)"), int)

        def ranges():
            return driver.execute_script("const m = Bokeh.documents[0].get_model_by_name('map'); "
                                         "return [m.x_range.start, m.x_range.end, m.y_range.start, m.y_range.end]")

        def in_view(r):
            return set(np.flatnonzero((xs >= r[0]) & (xs <= r[1]) & (ys >= r[2]) & (ys <= r[3])).tolist())

        assert driver.execute_script("return Bokeh.documents[0].get_model_by_name('points_source').data.x.length") == 100
        assert len(set(drawn().tolist())) == 100 and set(drawn().tolist()) <= in_view(ranges())
        assert "dots: 100 of the 240 in view, grey shade: every one" in _text(driver, "status")
        # the shade: every point in view, binned to the frame's 2 x 2 pixels, as numpy bins them
        sh = driver.execute_script("const s = zspace.state.shade; return {counts: Array.from(s.counts), W: s.W, "
                                   "H: s.H, box: s.box, shape: Bokeh.documents[0].get_model_by_name("
                                   "'density_source').data.image[0].shape}")
        ref, _, _ = np.histogram2d(ys, xs, bins=(sh["H"], sh["W"]), range=[sh["box"][2:], sh["box"][:2]])
        counts = np.asarray(sh["counts"]).reshape(sh["H"], sh["W"])
        assert sh["shape"] == [sh["H"], sh["W"]] and sh["W"] > 100 and counts.sum() == ref.sum() == len(in_view(ranges()))
        assert np.abs(counts - ref).sum() <= 4  # a point on a bin's edge may fall either side
        img = driver.execute_script(
            "const d = Bokeh.documents[0].get_model_by_name('density_source').data; return {x: d.x[0], y: d.y[0], "
            "dw: d.dw[0], dh: d.dh[0], rgba: Array.from(new Uint8Array(d.image[0].buffer))}")
        assert [img["x"], img["x"] + img["dw"], img["y"], img["y"] + img["dh"]] == pytest.approx(sh["box"])
        alpha = np.asarray(img["rgba"]).reshape(sh["H"], sh["W"], 4)[..., 3]
        assert ((alpha > 0) == (counts > 0)).all()
        assert alpha[counts == 1].tolist() == [38] * int((counts == 1).sum())  # 0.15 of 255: one point
        assert alpha[counts == counts.max()].tolist() == [191] * int((counts == counts.max()).sum())  # 0.75
        # hiding the null map widens the data map: its shade is made again at the new size; shown again, the
        # null map's shade is made for its frame as laid out
        fits = ("const s = zspace.state.{0}, f = Bokeh.index.find_one(Bokeh.documents[0].get_model_by_name('{1}'))"
                ".frame.bbox; return !!s && zspace.settled() && s.W === Math.round(f.width / 2) && "
                "s.H === Math.round(f.height / 2) && {2} ? s.W : 0")
        for on in (False, True):
            driver.execute_script(f"const e = document.getElementById('show-null'); e.checked = {str(on).lower()}; "
                                  "e.dispatchEvent(new Event('change'))")
            # the data map's frame about doubles without the null map beside it, and its shade with it
            w = _wait(driver, fits.format("shade", "map", f"s.W {'>' if not on else '<'} {1.5 * sh['W']}"))
            if on:
                assert w == sh["W"]
                assert _wait(driver, fits.format("nullShade", "null_map", "true")) == sh["W"]
            else:
                assert driver.execute_script("return zspace.state.nullShade") is None
        # the browser's WebGL is SwiftShader: the page draws on the 2D canvas and says why
        backend = driver.execute_script("return zspace.state.backend")
        assert "SwiftShader" in backend["renderer"] and backend["backend"] == "canvas"
        assert driver.execute_script("return zspace.state.webgl") is False
        assert "2D canvas (WebGL runs in software here)" in _text(driver, "status")
        # zoom to a window around the median point holding fewer than 100: every point in it is drawn
        cx, cy = float(np.median(xs)), float(np.median(ys))
        half = 0.25 * (xs.max() - xs.min())
        while len(in_view((cx - half, cx + half, cy - half, cy + half))) >= 100:
            half *= 0.8
        # every set of points Bokeh is handed from here on
        driver.execute_script("const s = Bokeh.documents[0].get_model_by_name('points_source'); window.__handed = []; "
                              "s.properties.data.change.connect(() => window.__handed.push([s.data.x.length, "
                              "Array.from(zspace.state.drawn)]))")
        driver.execute_script(f"const m = Bokeh.documents[0].get_model_by_name('map'); "
                              f"m.x_range.setv({{start: {cx - half}, end: {cx + half}}}); "
                              f"m.y_range.setv({{start: {cy - half}, end: {cy + half}}});")
        for _ in range(50):  # redrawn once the ranges settle
            if set(drawn().tolist()) == in_view(ranges()):
                break
            time.sleep(0.1)
        settled = drawn()
        assert set(settled.tolist()) == in_view(ranges()) and 20 < len(settled) < 100
        # while the ranges move, a fifth as many: the first of the same order, which the settled picture extends
        handed = driver.execute_script("return window.__handed")
        assert [n for n, _ in handed] == [20, len(settled)]
        assert handed[0][1] == settled[:20].tolist() and handed[1][1] == settled.tolist()
        # back to the whole map; a box counts every point inside it, drawn or not
        driver.execute_script("zspace.setLayout('tsne')")
        driver.execute_script("Bokeh.documents[0].get_model_by_name('map').toolbar.tools"
                              ".find(t => t.type === 'BoxSelectTool').active = true;")
        x0, y0, w, h = driver.execute_script(
            "const pv = Bokeh.index.find_one(Bokeh.documents[0].get_model_by_name('map')); const f = pv.frame.bbox;"
            "const e = pv.canvas_view.events_el.getBoundingClientRect(); return [e.left + f.left, e.top + f.top, "
            "f.width, f.height]")
        r = ranges()
        _drag(driver, x0, y0, w, h)
        bx = sorted(r[0] + f * (r[1] - r[0]) for f in (0.35, 0.65))
        by = sorted(r[3] - f * (r[3] - r[2]) for f in (0.3, 0.7))
        inside = set(np.flatnonzero((xs > bx[0]) & (xs < bx[1]) & (ys > by[0]) & (ys < by[1])).tolist())
        sel = set(driver.execute_script("return zspace.state.selection"))
        assert len(inside ^ sel) <= 0.05 * len(sel) + 2 and len(sel) > len(sel & set(drawn().tolist()))
        # a map that fits under the limit is drawn whole at rest, and thinner while the ranges move too
        _open(driver, run, "?draw=300")
        assert driver.execute_script("return zspace.lod") == {"limit": 300, "gesture": 60, "settle_ms": 300}
        driver.execute_script("const s = Bokeh.documents[0].get_model_by_name('points_source'); window.__handed = []; "
                              "s.properties.data.change.connect(() => window.__handed.push([s.data.x.length, "
                              "Array.from(zspace.state.drawn)]))")
        r = ranges()
        driver.execute_script(f"const m = Bokeh.documents[0].get_model_by_name('map'); "
                              f"m.x_range.setv({{start: {r[0] * 0.9}, end: {r[1] * 0.9}}});")
        _wait(driver, "return zspace.settled() && window.__handed.length > 1")
        handed = driver.execute_script("return window.__handed")
        assert [n for n, _ in handed] == [60, 240] and set(handed[0][1]) <= in_view(ranges())
        assert handed[1][1] == list(range(240))
        assert not [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    finally:
        driver.quit()
