"""The documentation's pages and their Python blocks, for tests/test_readme.py and
tests/test_docs.py.

A ```python block runs as written. The one way to leave a block out, for an example that
truly cannot run offline (a GPU cluster...), is a marker on the line before its fence:
``<!-- not run: REASON -->``.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import List

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = REPO / "docs"
BLOCK = re.compile(r"^(?:<!-- not run: (?P<reason>[^>]*\S)\s*-->\n)?```python\n(?P<code>.*?)^```",
                   re.S | re.M)


def pages() -> List[Path]:
    """Every Markdown page: the README, BENCHMARKS.md and docs/**/*.md."""
    return [README, REPO / "BENCHMARKS.md", *sorted(DOCS.rglob("*.md"))]


def python_blocks(path: Path) -> List[str]:
    """The page's ```python blocks in order, those marked ``not run`` left out."""
    return [m.group("code") for m in BLOCK.finditer(path.read_text(encoding="utf-8"))
            if not m.group("reason")]


def run_blocks(path: Path, cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    """The page's Python blocks, one after the other in one fresh process (as a reader
    pastes them into a notebook), in ``cwd``; each announces itself on stdout."""
    name = path.relative_to(REPO)
    code = "\n".join(f"print('--- {name} block {i}', flush=True)\n{block}"
                     for i, block in enumerate(python_blocks(path)))
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)
