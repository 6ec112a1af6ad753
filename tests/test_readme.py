"""The README's promises that code can check: its quick starts run; the flags table of
docs/flags.md is the settings' own; every registered teacher is in docs/teachers.md.
(The docs pages' own Python blocks, links and paths: tests/test_docs.py.)"""
import pytest

from docs_helpers import DOCS, README, python_blocks, run_blocks


@pytest.mark.e2e
def test_every_python_example_of_the_readme_runs(tmp_path):
    """The ```python blocks (the compress and prune quick starts) run as they are, one
    after the other in one fresh process, in an empty directory."""
    blocks = python_blocks(README)
    assert len(blocks) >= 2
    result = run_blocks(README, tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert f"--- README.md block {len(blocks) - 1}" in result.stdout
    assert "Teacher → final student" in result.stdout              # the headline printed
    assert (tmp_path / "my_student" / "tflite" / "final.tflite").exists()


@pytest.mark.unit
def test_the_flags_table_is_the_settings_own():
    """docs/flags.md's table is generated from the settings (defaults, help): it cannot
    drift from them. Regenerate it with
    ``epkd_tf.settings.flags_markdown(epkd_tf.cli.main._run_defaults(),
    epkd_tf.cli.main.CLI_FLAGS)``."""
    import epkd_tf.cli.main as main
    from epkd_tf.settings import flags_markdown
    text = (DOCS / "flags.md").read_text(encoding="utf-8")
    table = text.split("<!-- flags:start -->\n", 1)[1].split("\n<!-- flags:end -->", 1)[0]
    assert table == flags_markdown(main._run_defaults(), main.CLI_FLAGS)


@pytest.mark.unit
def test_every_registered_teacher_is_in_the_docs():
    from epkd_tf.models import model_names
    text = (DOCS / "teachers.md").read_text(encoding="utf-8")
    section = text.split("## The zoo (`--teacher`)", 1)[1].split("\n## ", 1)[0]
    for name in model_names():
        assert f"`{name}`" in section, name
