"""BENCHMARKS.md: every benchmark script owns one marked section and replaces only it."""
from pathlib import Path

PATH = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"
HEADER = ("# Benchmarks\n\nEvery figure below is measured by a script under `benchmarks/`; "
          "rerun it to refresh its section. Machines are shared and noisy: compare the "
          "ratios measured side by side in one run, not absolute times across sections.\n")


def replace_section(name: str, body: str, path: Path = PATH) -> None:
    """Replaces (or appends) the text between ``<!-- name:start/end -->`` markers."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = path.read_text() if path.exists() else HEADER
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        text = before + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)
