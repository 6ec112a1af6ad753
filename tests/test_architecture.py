"""The package's shape, read from its source (nothing is imported, no TensorFlow): imports
run one way, no library module imports the command line, and every error the package
raises on purpose derives from :class:`epkd_tf.EpkdError`."""
import ast
from pathlib import Path

import pytest

import epkd_tf
from epkd_tf import errors

pytestmark = pytest.mark.unit

PACKAGE = Path(epkd_tf.__file__).resolve().parent

# ``python -m epkd_tf.<name>`` keeps working through these thin modules: they are
# entry points, as the cli package is.
ENTRY_SHIMS = {"epkd_tf.main", "epkd_tf.export", "epkd_tf.report", "epkd_tf.study.__main__",
               "epkd_tf.data.__main__"}


def _modules():
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ("epkd_tf",) + path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path):
    """Every epkd_tf module ``name`` imports, at any depth of its code (a function's lazy
    import is as much a dependency as a top-level one)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in MODULES}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            for alias in node.names:
                if f"{module}.{alias.name}" in MODULES:
                    found.add(f"{module}.{alias.name}")
                elif module in MODULES:
                    found.add(module)
    return found


def _ancestor(package: str, module: str) -> bool:
    return module.startswith(package + ".")


def import_graph():
    """module -> the package modules it imports. Left out: a module importing one of its
    own parent packages (Python imports ``a.b`` before ``a.b.c`` in any case) and the root
    ``epkd_tf`` (it only selects Keras 2 and imports nothing)."""
    return {name: {d for d in _imports(name, path)
                   if d != name and d != "epkd_tf" and not _ancestor(d, name)}
            for name, path in MODULES.items()}


def cycles(graph):
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_import_graph_has_no_cycle():
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_planted_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_library_module_imports_the_command_line():
    library = {n: deps for n, deps in import_graph().items()
               if not n.startswith("epkd_tf.cli") and n not in ENTRY_SHIMS}
    offenders = {n: sorted(d for d in deps if d.startswith("epkd_tf.cli"))
                 for n, deps in library.items()}
    assert {n: d for n, d in offenders.items() if d} == {}


def test_the_command_line_shims_only_start_their_tool():
    for name in ENTRY_SHIMS:
        assert _imports(name, MODULES[name]) <= {f"epkd_tf.cli.{name.split('.')[1]}"}, name


def _exception_classes():
    """(module, class name, base names) of every class in the package whose name ends in
    Error, as written in the source."""
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and node.name.endswith("Error"):
                yield name, node.name, [ast.unparse(b) for b in node.bases]


def test_every_error_class_is_defined_in_errors_under_the_base():
    defined_elsewhere = [(m, c) for m, c, _ in _exception_classes() if m != "epkd_tf.errors"]
    assert defined_elsewhere == []
    for _, name, _ in _exception_classes():
        assert issubclass(getattr(errors, name), errors.EpkdError), name


@pytest.mark.parametrize("error, status", [
    (errors.ConfigError("keep_ratio", 2, "must be below 1"), 2),
    (errors.UsageError("x"), 2), (errors.DataError("x"), 2), (errors.ApiError("x"), 2),
    (errors.ModelFileError("x"), 2), (errors.DamagedRunError("x"), 2),
    (errors.DirectoryBusyError("x"), 2), (errors.NonFiniteLossError("x"), 1),
    (KeyboardInterrupt(), 130), (errors.Terminated(), 143), (OSError(28, "full"), 1)])
def test_exit_statuses_come_from_one_place(error, status):
    assert errors.exit_status(error) == status


def test_bad_input_errors_stay_value_errors():
    """Callers that caught ValueError before the hierarchy existed still catch them."""
    for name in ("ConfigError", "UsageError", "ApiError", "DataError", "ModelFileError",
                 "UnsupportedLayerError", "RunDirError", "PruningError", "UnknownNameError"):
        assert issubclass(getattr(errors, name), ValueError), name
    assert issubclass(errors.NonFiniteLossError, RuntimeError)


def test_the_base_is_exported():
    assert epkd_tf.EpkdError is errors.EpkdError
    assert set(epkd_tf.__all__) >= {"EpkdError", "ConfigError", "ApiError", "DataError",
                                    "ModelFileError"}


def test_no_file_holds_merge_conflict_markers():
    """A merge resolved in haste leaves ``<<<<<<<`` lines that nothing else may catch (a
    Markdown page still renders)."""
    import os
    repo = PACKAGE.parent
    skip = {".git", "saved_models", "data", "node_modules", "__pycache__"}
    found = []
    for root, dirs, files in os.walk(repo):
        # Virtual environments (any name) and outputs are not the project's files.
        dirs[:] = [d for d in dirs if d not in skip and not d.startswith(".")
                   and not os.path.exists(os.path.join(root, d, "pyvenv.cfg"))]
        for name in files:
            if not name.endswith((".py", ".md", ".ini", ".cfg", ".txt")):
                continue
            path = Path(root, name)
            for number, line in enumerate(path.read_text(encoding="utf-8",
                                                         errors="replace").splitlines(), 1):
                if line.startswith(("<" * 7 + " ", ">" * 7 + " ")) or line == "=" * 7:
                    found.append(f"{path.relative_to(repo)}:{number}")
    assert found == []
