"""Show that a refactor left zspace's results unchanged: run the main job with two checkouts, compare.

    python tests/behaviour_unchanged.py snapshot CHECKOUT OUT   # zspace run of CHECKOUT's cli.py into OUT
    python tests/behaviour_unchanged.py diff OUT_A OUT_B        # stats, structure, t-SNE, compare: equal?

Both snapshots run the same small main job (synthetic faces, one seed) through
the command line, which is the contract that outlives any internal layout.
``diff`` compares every number in ``stats.json``, ``structure.json`` and
``compare.json`` and the t-SNE embedding, to a relative 1e-6 (sums taken in a
new order may move the last bits), ignoring timings and paths, and exits 1
listing every difference.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

RUN_ARGS = ["synthetic:800", "--size", "32", "--z-dim", "16", "--epochs", "2", "--k", "8",
            "--tsne-n", "400", "--compare-n", "60", "--seed", "3", "--device", "cpu", "--quick"]
OUTPUTS = ["stats/stats.json", "structure/structure.json", "generate/compare.json"]
IGNORED = {"seconds", "figures", "figure", "path", "run", "file", "created", "finished", "images_per_second"}
RTOL = 1e-6


def snapshot(checkout: Path, out: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(checkout))
    cmd = [sys.executable, str(checkout / "cli.py"), "-q", "run", *RUN_ARGS, "--run", str(out)]
    subprocess.run(cmd, cwd=checkout, env=env, check=True)


def _walk(a, b, where: str, diffs: list[str]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k in IGNORED or "seconds" in k:
                continue
            if k not in a or k not in b:
                diffs.append(f"{where}.{k}: only in {'first' if k in a else 'second'}")
                continue
            _walk(a[k], b[k], f"{where}.{k}", diffs)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            diffs.append(f"{where}: length {len(a)} != {len(b)}")
        for i, (x, y) in enumerate(zip(a, b)):
            _walk(x, y, f"{where}[{i}]", diffs)
    elif isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        if not (a == b or (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=RTOL, abs_tol=1e-12)):
            diffs.append(f"{where}: {a!r} != {b!r}")
    elif a != b and not (isinstance(a, str) and ("/" in a or "\\" in a)):
        diffs.append(f"{where}: {a!r} != {b!r}")


def diff(a: Path, b: Path) -> list[str]:
    diffs: list[str] = []
    for name in OUTPUTS:
        _walk(json.loads((a / name).read_text()), json.loads((b / name).read_text()), name, diffs)
    with np.load(a / "tsne/embedding.npz") as ea, np.load(b / "tsne/embedding.npz") as eb:
        for k in sorted(set(ea.files) | set(eb.files)):
            if k not in ea.files or k not in eb.files:
                diffs.append(f"tsne/embedding.npz[{k}]: only in one")
            elif ea[k].shape != eb[k].shape or not np.allclose(ea[k], eb[k], rtol=RTOL, atol=1e-9, equal_nan=True):
                diffs.append(f"tsne/embedding.npz[{k}]: differs (shapes {ea[k].shape}, {eb[k].shape})")
    return diffs


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "snapshot":
        snapshot(Path(argv[1]).resolve(), Path(argv[2]).resolve())
        return 0
    if len(argv) == 3 and argv[0] == "diff":
        diffs = diff(Path(argv[1]), Path(argv[2]))
        print("\n".join(diffs) if diffs else f"equal: {', '.join(OUTPUTS)} and the t-SNE embedding (rtol {RTOL})")
        return 1 if diffs else 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
