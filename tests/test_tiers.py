"""The test suite's own order (tests/conftest.py): every module runs as a whole, heaviest
tier first, so the two xdist workers finish together."""
import dataclasses

import pytest

from conftest import heaviest_modules_first

pytestmark = pytest.mark.unit


@dataclasses.dataclass
class Mark:
    name: str


@dataclasses.dataclass
class Item:
    nodeid: str
    marks: tuple

    def iter_markers(self):
        return iter(Mark(name) for name in self.marks)


def test_modules_run_heaviest_tier_first_and_keep_their_own_order():
    items = [Item("a.py::one", ("unit",)), Item("a.py::two", ("unit",)),
             Item("b.py::one", ("unit",)), Item("b.py::two", ("e2e", "slow")),
             Item("c.py::one", ("integration", "parametrize")),
             Item("d.py::one", ("e2e",)), Item("e.py::one", ("unit",))]
    order = [item.nodeid for item in heaviest_modules_first(items)]
    assert order == ["b.py::one", "b.py::two", "d.py::one", "c.py::one",
                     "a.py::one", "a.py::two", "e.py::one"]
