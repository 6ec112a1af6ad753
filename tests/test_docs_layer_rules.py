"""docs/layer_rules.md: its example runs as written."""
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

DOC = Path(__file__).resolve().parents[1] / "docs" / "layer_rules.md"


def test_layer_rules_example_runs(capsys):
    code = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S).group(1)
    # Not the .md path: TensorFlow's autograph would read the layers' source from it by
    # line number.
    exec(compile(code, "<docs/layer_rules.md>", "exec"), {"__name__": "layer_rules_example"})
    assert int(capsys.readouterr().out.split()[-1]) < 32
