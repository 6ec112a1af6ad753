"""The benchmark pages' shared helpers (``benchmarks/benchmarks_md.py``) that need no run."""
import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def md():
    spec = importlib.util.spec_from_file_location("benchmarks_md_helpers",
                                                  BENCHMARKS / "benchmarks_md.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_cpu_line_names_the_model_and_its_int8_dot_product_features(md, tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: AMD EPYC\n"
                    "flags\t\t: fpu avx2 avx512f avx512_vnni avx512_bf16\n\n"
                    "processor\t: 1\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2\n")
    assert md.cpu(info) == "AMD EPYC (avx512_vnni)"       # the first processor's
    info.write_text("model name\t: Intel(R) Xeon(R) Processor\nflags\t\t: fpu avx2 avx512f\n")
    assert md.cpu(info) == ("Intel(R) Xeon(R) Processor (no avx512_vnni, avx_vnni, "
                            "amx_int8)")
    # No /proc (another OS): still a name, never an error.
    assert md.cpu(tmp_path / "missing") != ""
