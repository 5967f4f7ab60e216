"""The code's shape: engine/ imports flow one way along the data flow, without cycles or back doors.

Read from the source with ``ast`` (nothing is imported), so a violation fails
with the offending file and line however the import is written: at the top,
inside a function, or as ``import engine.x``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ENGINE = REPO / "engine"

# lower layers first; a module may import its own layer and the layers before it
LAYERS = ("base", "data", "model", "latents", "analysis", "generation", "attributes", "report", "explore", "contrast",
          "pipeline")
BASE = {"engine.config", "engine.deps", "engine.files", "engine.figures", "engine.layout", "engine.stages", "engine.stores"}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str:
    if module in BASE or module == "engine":
        return "base"
    if module == "engine.pipeline":
        return "pipeline"
    return module.split(".")[1]


def engine_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ENGINE.rglob("*.py"))}


def imports_of(path: Path) -> list[tuple[str, list[str], int, bool]]:
    """(module, imported names, line, inside a function) for every import of an engine or kernels module."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []

    def visit(node, in_function: bool):
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                for a in child.names:
                    if a.name.split(".")[0] in ("engine", "kernels"):
                        found.append((a.name, [], child.lineno, in_function))
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                if child.module.split(".")[0] in ("engine", "kernels"):
                    found.append((child.module, [a.name for a in child.names], child.lineno, in_function))
            visit(child, nested)

    visit(tree, False)
    return found


def test_engine_is_laid_out_along_the_data_flow():
    packages = sorted(p.name for p in ENGINE.iterdir() if (p / "__init__.py").exists())
    assert packages == sorted(set(LAYERS) - {"base", "pipeline"}), packages
    unknown = [m for m in engine_modules() if layer_of(m) not in LAYERS]
    assert not unknown, f"modules outside the layers {LAYERS}: {unknown}"


def test_imports_go_one_way_and_never_hide_in_functions():
    modules = engine_modules()
    problems = []
    for mod, path in modules.items():
        rank = LAYERS.index(layer_of(mod))
        for target, names, line, in_function in imports_of(path):
            where = f"{path.relative_to(REPO)}:{line} imports {target}"
            if in_function:
                problems.append(f"{where} inside a function (move it to the top; lazy imports only for heavy "
                                f"third-party libraries)")
            if target.startswith("kernels"):
                continue
            if target not in modules:
                problems.append(f"{where}, which does not exist")
                continue
            if LAYERS.index(layer_of(target)) > rank:
                problems.append(f"{where}: layer {layer_of(mod)!r} must not import the higher layer {layer_of(target)!r}")
            private = [n for n in names if n.startswith("_")]
            if private:
                problems.append(f"{where}: takes private names {private}")
    assert not problems, "\n".join(problems)


def test_no_import_cycles():
    modules = engine_modules()
    graph = {m: {t for t, _, _, _ in imports_of(p) if t in modules and t != m} for m, p in modules.items()}
    state: dict[str, int] = {}
    cycles = []

    def dfs(m, stack):
        state[m] = 1
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                cycles.append(" -> ".join(stack[stack.index(t):] + [t]))
            elif t not in state:
                dfs(t, stack + [t])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            dfs(m, [m])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_kernels_import_no_engine_code():
    for path in sorted((REPO / "kernels").rglob("*.py")):
        bad = [t for t, _, _, _ in imports_of(path) if t.startswith("engine")]
        assert not bad, f"{path.relative_to(REPO)} imports {bad}: kernels are pure functions below the engine"


def test_the_layer_check_catches_an_upward_import(tmp_path):
    """The checker itself: an analysis module importing generation, hidden in a function, is reported."""
    p = tmp_path / "bad.py"
    p.write_text("def f():\n    from engine.generation.compare import compare\n    return compare\n")
    assert imports_of(p) == [("engine.generation.compare", ["compare"], 2, True)]


@pytest.mark.parametrize("limit", [80])
def test_functions_are_short(limit):
    """No engine, kernel or bench function longer than about 80 lines, except render_face (its draw order
    fixes every synthetic image, pinned by a hash test)."""
    allowed = {"render_face"}
    long = []
    for path in sorted([*ENGINE.rglob("*.py"), *(REPO / "kernels").rglob("*.py"), *(REPO / "bench").rglob("*.py"),
                        REPO / "cli.py"]):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name not in allowed:
                n = node.end_lineno - node.lineno + 1
                if n > limit:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} has {n} lines")
    assert not long, "\n".join(long)


def test_importing_zspace_changes_no_global_state():
    """No pyplot, no backend switch: a notebook user's matplotlib stays as it was."""
    import subprocess
    import sys

    code = ("import matplotlib; before = matplotlib.get_backend(); import sys; "
            "import engine.figures, engine.analysis.stats, engine.analysis.structure, engine.analysis.tsne, "
            "engine.generation.compare, engine.report.page, engine.pipeline; "
            "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'; "
            "assert matplotlib.get_backend() == before, (before, matplotlib.get_backend()); print('ok')")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         env={"MPLBACKEND": "svg", "PATH": ""})
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_the_stage_table_names_real_functions_and_configs_and_the_pipeline_runs_them():
    """The table's module:attribute strings resolve, and `zspace run` calls exactly those functions."""
    import dataclasses

    import engine.pipeline
    from engine.stages import TABLE

    for stage in TABLE:
        fn = stage.resolve()
        assert callable(fn), stage.name
        assert getattr(engine.pipeline, fn.__name__) is fn, f"pipeline does not call {stage.function}"
        cfg = stage.config_class()
        assert cfg is None or dataclasses.is_dataclass(cfg), stage.config
