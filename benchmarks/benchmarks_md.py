"""The benchmark pages: every script writes its own page, ``docs/benchmarks/<script>.md``,
and owns one or more marked sections in it, replacing only those; ``BENCHMARKS.md`` is the
index, whose list of pages is regenerated from the pages whenever one is written."""
import re
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[1]
PAGES = REPO / "docs" / "benchmarks"
INDEX = REPO / "BENCHMARKS.md"
INDEX_MARKERS = ("<!-- pages:start -->", "<!-- pages:end -->")


#: CPU features LiteRT's int8 kernels run differently with (integer dot products; the
#: int8_speed page measured a fixed cost per int8 convolution on a CPU without them that
#: a CPU with ``avx512_vnni`` does not have).
INT8_FEATURES = ("avx512_vnni", "avx_vnni", "amx_int8")


def cpu(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU a benchmark ran on, for its page: the model name and which of
    :data:`INT8_FEATURES` it has ("Intel(R) Xeon(R) Processor (no avx512_vnni, ...)"), or
    the platform's processor name where ``cpuinfo`` cannot be read."""
    import platform
    try:
        lines = cpuinfo.read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine() or "unknown CPU"
    field = lambda name: next((line.split(":", 1)[1].strip() for line in lines  # noqa: E731
                               if line.split(":", 1)[0].strip() == name), "")
    model = field("model name") or platform.machine() or "unknown CPU"
    flags = set(field("flags").split())
    found = [f for f in INT8_FEATURES if f in flags]
    return f"{model} ({', '.join(found) if found else 'no ' + ', '.join(INT8_FEATURES)})"


def page(script: str) -> Path:
    """The page of the benchmark script ``script`` (a path or a name): its stem + ``.md``."""
    return PAGES / f"{Path(script).stem}.md"


def header(path: Path) -> str:
    """The start of a new page (a script's first run writes it; edit it by hand after)."""
    return (f"# `benchmarks/{path.stem}.py`\n\nWritten by `benchmarks/{path.stem}.py` between "
            "the markers below (rerun it to refresh them); dated notes outside the markers "
            "are kept. Machines are shared and noisy: compare the ratios measured side by "
            "side in one run, not absolute times across sections. "
            "[All benchmarks](../../BENCHMARKS.md).\n")


def replace_section(name: str, body: str, path: Path) -> None:
    """Replaces (or appends) the text between ``<!-- name:start/end -->`` markers of the
    page ``path`` (made with ``header`` if new); a page of ``docs/benchmarks/`` also
    refreshes the index of BENCHMARKS.md."""
    path = Path(path)
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = path.read_text() if path.exists() else header(path)
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        text = before + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if path.resolve().parent == PAGES.resolve():
        write_index()


def page_summary(path: Path) -> str:
    """One index line: the page's title and script, and when each of its top-level sections
    was measured (named by its heading when the page has several)."""
    text = path.read_text()
    title = re.search(r"^# (.+)$", text, re.M)
    sections = re.findall(r"<!-- (\w+):start -->\n(.*?)<!-- \1:end -->", text, re.S)
    dates = []
    for name, body in sections:
        heading = re.search(r"^## (.+?)(?: \(`benchmarks/[^)]*\))?$", body, re.M)
        date = re.search(r"Measured (\d{4}-\d{2}-\d{2})", body)
        when = date.group(1) if date else "undated"
        dates.append(f"{when} ({heading.group(1) if heading else name})"
                     if len(sections) > 1 else when)
    line = (f"- [{title.group(1) if title else path.stem}](docs/benchmarks/{path.name}), "
            f"`benchmarks/{path.stem}.py`")
    return line + (": measured " + "; ".join(dates) if dates else "")


def index_markdown(pages: Optional[Path] = None) -> str:
    """The generated list of pages in BENCHMARKS.md (between its ``pages`` markers)."""
    return "\n".join(page_summary(path) for path in sorted(Path(pages or PAGES).glob("*.md")))


def write_index(index: Optional[Path] = None, pages: Optional[Path] = None) -> None:
    """Regenerates the list of pages between the markers of ``index`` (BENCHMARKS.md)."""
    start, end = INDEX_MARKERS
    index = Path(index or INDEX)
    text = index.read_text()
    before, rest = text.split(start, 1)
    index.write_text(f"{before}{start}\n{index_markdown(pages)}\n{end}{rest.split(end, 1)[1]}")
