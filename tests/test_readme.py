"""The README's promises that code can check: its Python examples run."""
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_every_python_example_of_the_readme_runs(tmp_path):
    """The ```python blocks run as they are, one after the other in one fresh process (as
    a reader pastes them into a notebook), in an empty directory."""
    blocks = python_blocks()
    assert len(blocks) >= 2
    code = "\n".join(f"print('--- README block {i}', flush=True)\n{block}"
                     for i, block in enumerate(blocks))
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert f"--- README block {len(blocks) - 1}" in result.stdout
    assert "Teacher → final student" in result.stdout              # the headline printed
    assert (tmp_path / "my_student" / "tflite" / "final.tflite").exists()


def test_the_flags_table_is_the_settings_own():
    """The README's flag table is generated from the settings (defaults, help): it cannot
    drift from them. Regenerate it with
    ``epkd_tf.settings.flags_markdown(epkd_tf.main._run_defaults(), epkd_tf.main.CLI_FLAGS)``."""
    import epkd_tf.cli.main as main
    from epkd_tf.settings import flags_markdown
    text = README.read_text(encoding="utf-8")
    table = text.split("<!-- flags:start -->\n", 1)[1].split("\n<!-- flags:end -->", 1)[0]
    assert table == flags_markdown(main._run_defaults(), main.CLI_FLAGS)


def test_every_registered_teacher_is_in_the_readme():
    from epkd_tf.models import model_names
    text = README.read_text(encoding="utf-8")
    section = text.split("## Teachers (`--teacher`)", 1)[1].split("\n## ", 1)[0]
    for name in model_names():
        assert f"`{name}`" in section, name
