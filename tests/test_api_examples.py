"""The public API's docstrings: every function and class a user calls has Args, Returns
(functions), Raises naming errors of epkd_tf.errors (built-in ones only where listed with
a reason), and an ``Example::`` that runs as it is, offline, in an empty directory. The
examples run here in one process, one after the other; what they register (a pruner, a
teacher, a layer rule, a dataset recipe) is unregistered after each."""
import epkd_tf  # noqa: F401  (first: Keras 2 for TensorFlow)

import inspect
import re
import textwrap

import pytest

from epkd_tf import errors

pytestmark = pytest.mark.integration

# Everything of epkd_tf.__all__ that users call (the errors and registries aside).
DOCUMENTED = ["compress", "prune", "analyze", "load_model", "CompressionResult", "Distiller",
              "with_flags", "from_arrays", "from_datasets", "load_data", "register_pruner",
              "register_model", "register_rule", "register_dataset", "RunConfig",
              "DataConfig", "TeacherConfig", "PruningConfig", "DistillConfig", "BudgetConfig"]


# Built-in exceptions a Raises section may name, and why they are not EpkdErrors.
BUILTIN_RAISES = {
    ("Distiller", "ValueError"): "raised while TensorFlow traces the train step, which "
                                 "re-raises built-in exception types only",
}


def _doc(name: str) -> str:
    return inspect.getdoc(getattr(epkd_tf, name)) or ""


def _section(doc: str, title: str) -> str:
    """The indented lines under ``title`` (``Args:``, ``Raises:``, ``Example::``)."""
    _, found, rest = doc.partition(f"\n{title}\n")
    if not found:
        return ""
    lines = []
    for line in rest.split("\n"):
        if line.strip() and not line.startswith(" "):
            break
        lines.append(line)
    return textwrap.dedent("\n".join(lines)).strip("\n") + "\n"


def test_the_list_is_every_callable_the_package_exports():
    exported = {name for name in epkd_tf.__all__
                if callable(getattr(epkd_tf, name))
                and not (inspect.isclass(getattr(epkd_tf, name))
                         and issubclass(getattr(epkd_tf, name), BaseException))}
    assert exported == set(DOCUMENTED)


@pytest.mark.parametrize("name", DOCUMENTED)
def test_the_docstring_has_args_returns_raises_and_an_example(name):
    doc = _doc(name)
    sections = ["Args:", "Raises:", "Example::"]
    if not inspect.isclass(getattr(epkd_tf, name)):
        sections.insert(1, "Returns:")
    for title in sections:
        assert _section(doc, title).strip(), f"{name}: no {title} section"
    positions = [doc.index(f"\n{title}\n") for title in sections]
    assert positions == sorted(positions), f"{name}: sections out of order"
    # Each entry of Raises names exception classes of epkd_tf.errors.
    entries = re.findall(r"^(\w+(?:, \w+)*):", _section(doc, "Raises:"), flags=re.M)
    assert entries, f"{name}: Raises names no exception"
    for entry in entries:
        for error in entry.split(", "):
            assert (name, error) in BUILTIN_RAISES or issubclass(
                getattr(errors, error, type), errors.EpkdError), (name, error)


@pytest.fixture
def registries_restored():
    """Unregisters whatever an example registers (built-ins are registered first)."""
    import epkd_tf.models  # noqa: F401  (the zoo registers its teachers)
    import epkd_tf.pruning  # noqa: F401  (the built-in pruners)
    from epkd_tf.data.recipes import RECIPES
    from epkd_tf.graph import rules
    from epkd_tf.models.registry import MODELS
    from epkd_tf.pruning.registry import PRUNERS
    before = {id(r): set(r.names()) for r in (PRUNERS, MODELS, RECIPES, rules.RULES)}
    yield
    for registry in (PRUNERS, MODELS, RECIPES):
        for name in set(registry.names()) - before[id(registry)]:
            registry.unregister(name)
    for name in set(rules.RULES.names()) - before[id(rules.RULES)]:
        rules.unregister_rule(name)


@pytest.mark.parametrize("name", DOCUMENTED)
def test_the_example_runs(name, tmp_path, monkeypatch, registries_restored):
    import tf_keras
    code = _section(_doc(name), "Example::")
    assert "import epkd_tf" in code, "an example starts from the import"
    monkeypatch.chdir(tmp_path)
    try:
        exec(compile(code, f"<example of epkd_tf.{name}>", "exec"), {"__name__": "__main__"})
    finally:
        tf_keras.backend.clear_session()
