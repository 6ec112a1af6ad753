"""The documentation holds together: the README stays a landing page, every docs page's
Python blocks run, every relative link (and #anchor) resolves, every repository path and
``python -m`` module named in code exists, and no page holds a path of one machine.

Pages: README.md, BENCHMARKS.md and docs/**/*.md (see docs_helpers). The README's own
blocks run in tests/test_readme.py, docs/layer_rules.md's in tests/test_docs_layer_rules.py.
"""
import importlib.util
import re
from pathlib import Path

import pytest

from docs_helpers import DOCS, README, REPO, pages, python_blocks, run_blocks

README_MAX_LINES = 150
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
LINK = re.compile(r"!?\[[^\]]*\]\(([^()\s]+)\)")
# Paths that exist on one machine only: a home, this project's work tree, a temporary
# directory.
MACHINE_PATH = re.compile(r"(?<![\w.~-])/(?:home|work|tmp|Users|root)/")
REPO_PATH = re.compile(r"`((?:epkd_tf|tests|benchmarks|flags|docs)/[\w./-]*)`")
MODULE = re.compile(r"python -m (epkd_tf(?:\.\w+)*)")
OWN_TEST = {DOCS / "layer_rules.md"}        # its example runs in its own test


def prose(path: Path) -> str:
    """The page without its fenced code blocks."""
    return FENCE.sub("", path.read_text(encoding="utf-8"))


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set:
    seen, result = {}, set()
    for heading in re.findall(r"^#{1,6} (.+)$", prose(path), re.M):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def short(path: Path) -> str:
    return str(path.relative_to(REPO))


@pytest.mark.unit
def test_the_readme_is_a_landing_page():
    """At most 150 lines, and its first two blocks are the two set-up commands: install and
    run the main job, install and run the tests (the full default suite)."""
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= README_MAX_LINES, "README.md: move detail to docs/"
    bash = re.findall(r"```bash\n(.*?)```", text, re.S)
    assert "pip install -e ." in bash[0] and "python -m epkd_tf.main" in bash[0]
    assert "pip install -e '.[test]'" in bash[1]
    assert bash[1].strip().endswith("python -m pytest -q")
    assert text.index(bash[1]) < text.index("## ")            # before any section


@pytest.mark.unit
def test_every_page_is_linked_from_the_readme_or_a_page():
    """No orphan: every docs page is reachable by a link from another page."""
    linked = set()
    for page in pages():
        for target in LINK.findall(prose(page)):
            linked.add((page.parent / target.split("#")[0]).resolve())
    orphans = [short(p) for p in DOCS.rglob("*.md") if p.resolve() not in linked]
    assert not orphans, orphans


@pytest.mark.e2e
@pytest.mark.parametrize("page", [p for p in pages() if p != README and p not in OWN_TEST
                                  and python_blocks(p)], ids=short)
def test_the_python_blocks_of_a_page_run(page, tmp_path):
    """A page's ```python blocks run as written, in order, in one fresh process, in an empty
    directory (a block that truly cannot run offline says ``<!-- not run: why -->``)."""
    result = run_blocks(page, tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert f"--- {short(page)} block {len(python_blocks(page)) - 1}" in result.stdout


@pytest.mark.unit
def test_relative_links_resolve():
    """Every link and image of every page points to an existing file or directory, and an
    #anchor to a heading of the page it names."""
    broken = []
    for page in pages():
        for target in LINK.findall(prose(page)):
            if re.match(r"[a-z]+:", target):                   # https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            if not resolved.exists():
                broken.append(f"{short(page)}: {target} (no such file)")
            elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                broken.append(f"{short(page)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


@pytest.mark.unit
def test_paths_and_modules_named_in_the_docs_exist():
    """A repository path in code (`epkd_tf/...`, `tests/...`, `benchmarks/...`, `flags/...`,
    `docs/...`) exists, and every `python -m epkd_tf...` is a module: pages follow the
    code when it moves."""
    missing = []
    for page in pages():
        text = page.read_text(encoding="utf-8")
        for path in REPO_PATH.findall(text):
            if not (REPO / path).exists():
                missing.append(f"{short(page)}: {path}")
        for module in set(MODULE.findall(text)):
            if importlib.util.find_spec(module) is None:
                missing.append(f"{short(page)}: python -m {module}")
    assert not missing, "\n".join(missing)


@pytest.mark.unit
def test_no_page_holds_a_path_of_one_machine():
    found = [f"{short(page)}:{number}: {line.strip()}"
             for page in pages()
             for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1)
             if MACHINE_PATH.search(line)]
    assert not found, "\n".join(found)
