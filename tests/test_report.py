"""The report page: every figure and table, captions with the measured numbers, opened in a real headless Chromium."""

from __future__ import annotations

import html
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from bench.browser import CHROMEDRIVER, CHROMIUM, MISSING, chromium
from engine.report.page import write_report

requires_chromium = pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None, reason=MISSING)


def _browser():
    pytest.importorskip("selenium.webdriver", reason="selenium not installed (pip install -e '.[test]')")
    return chromium(window=(1280, 2000))


@pytest.mark.slow  # needs finished_run: every stage once
def test_report_files_and_numbers(finished_run):
    page = (finished_run / "report" / "index.html").read_text()
    md = (finished_run / "report" / "report.md").read_text()
    srcs = re.findall(r'<img src="([^"]+)"', page)
    assert len(srcs) >= 20, "training, stats, structure, t-SNE, compare grids and paths"
    for src in srcs:
        assert not src.startswith(("/", "http", "file:")) and ".." not in src, f"not a path inside the folder: {src}"
        assert (finished_run / "report" / src).stat().st_size > 0
    assert "http://" not in page and "https://" not in page and "<script" not in page, "no network, no script"
    for question in ("What region of z-space do faces occupy?", "How is that region shaped?",
                     "Is it one smooth cloud, or filaments and voids?", "Which z-points decode to faces?"):
        assert question in page and question in md
    stats = json.loads((finished_run / "stats" / "stats.json").read_text())
    assert f"Peak {stats['radius']['peak']:.2f}" in page and f"{stats['radius']['expected']:.2f}" in page
    comps = {c["index"]: c for c in stats["components"]}
    assert ("Dominant components:" in page) == bool(stats["dominant"])
    for i in stats["dominant"]:  # the dominant-component table carries each one's fitted centre, sigma and FWHM
        assert f"<tr><td>{i}</td><td>{comps[i]['mean']:.3f}</td><td>{comps[i]['std']:.3f}</td>" in page, i
        assert f"<td>{comps[i]['fwhm']:.3f}</td>" in page
    compare = json.loads((finished_run / "generate" / "compare.json").read_text())
    for name, m in compare["paths"].items():
        assert f"<td>{name.replace('_', ' ')}</td><td>{m['n']}</td>" in page and f"<td>{m['along']}</td>" in page, name
    for name, m in compare["samplers"].items():
        assert f"<td>{name}</td><td>{m['face_rate']:.3f}</td>" in page, name
    structure = json.loads((finished_run / "structure" / "structure.json").read_text())
    assert page.count(">differs<") + page.count(">no difference<") == len(structure["statistics"])
    # Findings open the page, before the first section, one answer per question with its numbers and a link
    findings = page[page.index('id="findings"') : page.index('id="q1"')]
    for q, anchor in (("What region?", "q2"), ("What shape?", "q3"), ("Fragmented or not?", "q4"),
                      ("Which z-points are faces?", "q5")):
        assert q in findings and f'href="#{anchor}"' in findings, q
    assert f"{stats['radius']['peak']:.2f}" in findings
    tw = structure["statistics"]["twonn_dimension"]
    assert f"TwoNN {tw['data']:.1f} vs {tw['null']:.1f}" in findings
    facemap = json.loads((finished_run / "facemap" / "facemap.json").read_text())
    sentence = html.escape(facemap["verdict"]["sentence"])
    assert sentence in findings and findings.index(sentence) < findings.index("Face rates per sampler")
    assert "Region or voids?" in page and "What a void looks like" in page
    assert "thin slab" not in page and "Projections of all points onto the plane" in page


@pytest.mark.slow  # needs finished_run: every stage once
def test_report_of_a_partial_run_names_the_missing_stages(tmp_path, finished_run):
    for part in ("images.zarr", "latents.zarr", "train", "stats"):
        src = finished_run / part
        shutil.copytree(src, tmp_path / part)
    res = write_report(tmp_path)
    assert res["missing_figures"] == []
    assert any("zspace structure" in c for c in res["missing_stages"])
    assert any("zspace compare" in c for c in res["missing_stages"])
    assert "Not run yet" in (tmp_path / "report" / "index.html").read_text()


def test_report_tables_the_planted_dominant_components(tmp_path):
    import numpy as np

    from engine.analysis.stats import compute_stats
    from engine.latents.importer import import_latents

    rng = np.random.default_rng(0)
    z = rng.normal(size=(4000, 24)).astype(np.float32)
    z[:, 5] *= 3.0  # planted: one wide component
    z[:, 11] += 4.0  # and one off-centre
    np.save(tmp_path / "z.npy", z)
    import_latents(tmp_path / "z.npy", tmp_path, progress=False)
    compute_stats(tmp_path, progress=False)
    write_report(tmp_path)
    page = (tmp_path / "report" / "index.html").read_text()
    rows = re.findall(r"<tr><td>(\d+)</td><td>(-?[\d.]+)</td><td>([\d.]+)</td>", page)
    assert [r[0] for r in rows] == ["5", "11"]
    assert float(rows[0][2]) == pytest.approx(z[:, 5].std(), abs=2e-3)
    assert float(rows[1][1]) == pytest.approx(z[:, 11].mean(), abs=2e-3)
    assert "Not run yet: <code>zspace train" in page and "Not run yet: <code>zspace compare" in page


def test_report_on_a_missing_run_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_report(tmp_path / "nope")


@requires_chromium
def test_report_opens_in_headless_chromium_with_every_image_loaded(finished_run, tmp_path):
    # moved away from the run: the report folder alone must be complete
    folder = shutil.copytree(finished_run / "report", tmp_path / "sent" / "report")
    driver = _browser()
    try:
        driver.get(Path(folder / "index.html").resolve().as_uri())
        driver.execute_script("window.scrollTo(0, document.body.scrollHeight)")
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])")
        assert len(images) >= 20
        broken = [src for src, complete, width in images if not (complete and width > 0)]
        assert broken == [], f"images that did not load: {broken}"
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == [], errors
        assert driver.title.startswith("zspace report")
        sections = [h.text for h in driver.find_elements("css selector", "section h2")]
        assert len(sections) == 7 and sections[0] == "Findings"  # the Findings, then the six questions
        assert len(driver.find_elements("css selector", "#findings li")) == 5  # one per question the stages answered, the attributes included
        # captions carry numbers: each figure's caption has at least one digit
        captions = [c.text for c in driver.find_elements("css selector", "figcaption")]
        assert len(captions) == len(images) and all(re.search(r"\d", c) for c in captions)
    finally:
        driver.quit()


def test_captions_read_as_sentences_when_no_component_is_dominant():
    from engine.report.page import _dominant_caption, _finding_region

    stds = np.array([1.0, 3.0, 0.5, 2.0, 2.5, 0.1])
    comps = [{"std": float(s)} for s in stds]
    none = _dominant_caption([], comps)
    widest = ", ".join(map(str, np.argsort(-stds)[:4]))
    assert none.startswith("No component stands out") and f"the 4 widest: {widest}." in none, none
    assert ": ," not in none and "0 components" not in none
    assert _dominant_caption([4], comps).startswith("1 component stands out by centre or width: 4, each")
    st = {"d": 6, "dominant": [], "radius": {"peak": 2.0, "expected": 2.1, "sqrt_d": 2.4, "min": 1.0}}
    assert _finding_region(st).endswith("none of the 6 components stands out by centre or width.")
