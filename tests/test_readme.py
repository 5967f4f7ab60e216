"""README.md, a newcomer's first contact: short, its commands real, its links alive.

Every ``zspace VERB`` it shows (code blocks, inline code, the verb table) is a sub-command of ``cli``, and every
option it names for a verb is one of that verb's options; its two set-up commands are the ones that run (the
test command is the last line of ``.ci/run``; the main-job command runs ``zspace run`` on the synthetic
default); every relative link points to a file of the repository.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from cli import build_parser

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
MAX_BYTES = 16_000
# options README shows for commands that are not zspace's (the text before ``zspace VERB`` on a line)
OUTSIDE = {"--no-python": "torchrun"}

OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
VERB = re.compile(r"(?<![\w/.-])zspace ([a-z][a-z-]*)")
# where the text that belongs to a zspace command ends: another command, a comment, a pipe between words
END = re.compile(r"&&|;|\s#|\s\|\s|(?<![\w-])zspace\s")


def verbs() -> dict[str, set[str]]:
    """Each sub-command of ``zspace`` and its option strings."""
    (sub,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return {name: {o for a in sp._actions for o in a.option_strings} for name, sp in sub.choices.items()}


def code_blocks(text: str) -> list[str]:
    return re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.S | re.M)


def prose(text: str) -> str:
    return re.sub(r"^```[^\n]*\n.*?^```", "", text, flags=re.S | re.M)


def inline_code(text: str) -> list[str]:
    """The inline code spans outside code blocks, a span broken over lines joined with a space."""
    return [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", prose(text))]


def commands(snippet: str) -> list[tuple[str, str]]:
    """(verb, its text) for every ``zspace VERB`` in one line or span of code: the text runs to the end of the
    line or to what ends a shell command (``&&``, ``;``, a comment, a pipe, the next ``zspace``)."""
    found = []
    for line in snippet.splitlines():
        for m in VERB.finditer(line):
            rest = line[m.end():]
            cut = END.search(rest)
            found.append((m.group(1), rest[:cut.start()] if cut else rest))
    return found


def section(text: str, heading: str) -> str:
    """The text under the level-2 ``heading`` ("" when there is none)."""
    parts = ("\n" + text).split(f"\n## {heading}\n", 1)
    return parts[1].split("\n## ", 1)[0] if len(parts) == 2 else ""


def verb_table_rows(text: str) -> list[tuple[str, str]]:
    """(verb, the whole row) for each row of the table under '## Verbs'."""
    rows = []
    for line in section(text, "Verbs").splitlines():
        m = re.match(r"\| `zspace ([a-z][a-z-]*)[^`]*` \|", line)
        if m:
            rows.append((m.group(1), line))
    return rows


def setup_commands(text: str) -> list[str]:
    return [b.strip() for b in code_blocks(section(text, "Two commands for a fresh machine"))]


def misnamed(text: str, known: dict[str, set[str]]) -> list[str]:
    """What README says about the command line that the command line does not have."""
    problems = []
    snippets = code_blocks(text) + inline_code(text)
    named = [(verb, rest, f"`zspace {verb}{rest}`") for s in snippets for verb, rest in commands(s)]
    named += [(verb, row, f"verb table row of {verb}") for verb, row in verb_table_rows(text)]
    for verb, rest, where in named:
        if verb not in known:
            problems.append(f"{where}: no sub-command {verb!r} (zspace has {sorted(known)})")
            continue
        problems += [f"{where}: zspace {verb} has no option {o}" for o in OPTION.findall(rest) if o not in known[verb]]
    # a verb's options without 'zspace' (`prepare --overwrite`) are that verb's; an option named on its own
    # (`--quick`) must be an option of some verb or of a named outside tool
    every = set().union(*known.values()) | set(OUTSIDE)
    setup = " ".join(setup_commands(text))
    for span in inline_code(text):
        if "zspace " in span or span in setup:
            continue
        first = span.split()[0]
        allowed = known[first] if first in known else every
        owner = f"zspace {first} has no option" if first in known else "no zspace verb has"
        problems += [f"`{span}`: {owner} {o}" for o in OPTION.findall(span) if o not in allowed]
    return problems


def test_readme_is_short():
    size = README.stat().st_size
    assert size <= MAX_BYTES, f"README.md is {size:,} bytes, over {MAX_BYTES:,}: move detail to bench/RESULTS.md or a docstring"


def test_every_verb_and_option_readme_names_exists():
    text, known = README.read_text(), verbs()
    table = verb_table_rows(text)
    assert len(table) >= 10, f"the verb table under '## Verbs' has {len(table)} rows"
    assert len({v for v, _ in table}) == len(table), "a verb appears twice in the table"
    assert not misnamed(text, known), "\n".join(misnamed(text, known))


def test_the_option_check_catches_a_wrong_option_and_verb():
    """The checker itself: options belong to the verb they follow, a verb must exist, the table counts."""
    known = verbs()
    ok = "```bash\nzspace stats --dask local:2 --run r && zspace tsne --n 5 --run r  # --not-an-option\n```\n"
    assert misnamed(ok, known) == []
    wrong = [
        "```bash\nzspace stats --dask local:2 --run r --n 5\n```\n",  # --n is tsne's, not stats'
        "Run `zspace train --run r --sampler mvn`.\n",  # inline code
        "`zspace transmogrify --run r`\n",
        "## Verbs\n\n| verb | what |\n| --- | --- |\n| `zspace encode` | with `--bin-width` |\n",
        "Add `--no-such-thing` to go faster.\n",
        "after `prepare\n--epochs 3`\n",  # a verb's option without 'zspace', the span broken over two lines
    ]
    for text in wrong:
        assert misnamed(text, known), f"not caught: {text!r}"


def test_the_test_command_is_what_ci_runs():
    lines = [line for line in (REPO / ".ci" / "run").read_text().splitlines() if line.strip()]
    ci = lines[-1].strip()
    assert ci in setup_commands(README.read_text()), f"README's test command is not .ci/run's last line: {ci!r}"
    assert "pytest" in ci


def test_the_main_job_command_runs_zspace_run_on_the_synthetic_default():
    from engine.pipeline import DEFAULT_SOURCE

    setup = setup_commands(README.read_text())
    assert len(setup) == 2, f"'## Two commands for a fresh machine' shows {len(setup)} code blocks"
    ci = [line for line in (REPO / ".ci" / "run").read_text().splitlines() if line.strip()][-1].strip()
    (main_job,) = [c for c in setup if c != ci]
    (run,) = [rest for verb, rest in commands(main_job) if verb == "run"]
    args = build_parser().parse_args(["run", *run.split()])
    assert args.verb == "run" and args.source is None, f"the main job must run on the default source: {main_job!r}"
    assert DEFAULT_SOURCE.startswith("synthetic:"), DEFAULT_SOURCE
    # the same fresh environment and torch as CI's command
    env = ci.split(" && pip install")[0]
    assert main_job.startswith(env + " && pip install "), (main_job, env)
    pins = [re.findall(r"torch==\S+", c) for c in (main_job, ci)]
    assert pins[0] == pins[1] and pins[0], pins


def relative_links(text: str) -> list[str]:
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    return [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


def test_every_relative_link_points_to_a_file():
    links = relative_links(README.read_text())
    assert links, "no links found"
    missing = [t for t in links if not (REPO / t.split("#", 1)[0]).is_file()]
    assert not missing, f"README links to files that do not exist: {missing}"


@pytest.mark.parametrize("text,bad", [("see [x](engine/nope.py) and [y](README.md#top)", ["engine/nope.py"]),
                                      ("[web](https://example.org) [here](#verbs)", [])])
def test_the_link_check_finds_a_missing_file(text, bad):
    assert [t for t in relative_links(text) if not (REPO / t.split("#", 1)[0]).is_file()] == bad


def test_the_torch_readme_promises_is_the_one_pyproject_requires():
    (required,) = re.findall(r'"torch>=([0-9.]+)"', (REPO / "pyproject.toml").read_text())
    said = re.findall(r"torch >= ([0-9][0-9.]*[0-9])", README.read_text())
    assert said == [required], f"README says torch >= {said}, pyproject.toml requires torch>={required}"
