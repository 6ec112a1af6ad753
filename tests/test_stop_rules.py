"""The stop rules and the measures' bookkeeping on plain numbers (no model, no training)."""
import dataclasses

import numpy as np
import pandas as pd
import pytest

from epkd_tf.budget import StopRules, make_measure
from epkd_tf.config import BudgetConfig

pytestmark = pytest.mark.unit


@dataclasses.dataclass
class FakeCosts:
    nonzero_params: int = 1234
    size_mb: float = 0.5


def rules(measure="params", keep_ratio=0.5, **budget):
    return StopRules(BudgetConfig(budget=measure, **budget), make_measure(measure),
                     keep_ratio, validation=False)


def test_next_target_is_the_keep_ratio_of_the_cost_and_never_below_a_goal():
    assert rules().next_target(1001) == 500               # whole parameters
    assert isinstance(rules().next_target(1001), int)
    assert rules(target_params=700).next_target(1000) == 700
    assert rules("macs", target_params=700).next_target(1000.0) == 500.0  # other measure
    assert rules("size", target_size_mb=0.6).next_target(1e6) == pytest.approx(6e5)


def test_next_target_keeps_the_keep_ratio_of_the_cost_above_a_floor():
    # --keep_of=removable: half of what lies above the floor network's cost is kept.
    assert rules("macs").next_target(1000.0, floor=200.0) == 600.0
    assert rules().next_target(1001, floor=201) == 601      # whole parameters
    assert rules("macs").next_target(1000.0, floor=0.0) == rules("macs").next_target(1000.0)
    # A floor at or above the cost leaves nothing to remove; one below 0 is none.
    assert rules("macs").next_target(1000.0, floor=1000.0) == 1000.0
    assert rules("macs").next_target(1000.0, floor=1500.0) == 1000.0
    assert rules("macs").next_target(1000.0, floor=-5.0) == 500.0
    # A --target_* goal in the same measure still bounds it from below.
    assert rules("macs", target_macs=700).next_target(1000.0, floor=200.0) == 700.0


def test_goals_met_measures_only_the_goals_not_known():
    asked = []
    checker = rules(target_params=100, target_macs=50)

    def measure(name):
        asked.append(name)
        return 40.0

    costs = {"params": 90.0}
    assert checker.goals_met(costs, measure) and asked == ["macs"]
    assert not checker.goals_met({"params": 101.0}, measure)
    assert rules().goals_met({}, measure)                 # no goal: always met


def test_stop_reason_on_recorded_rows():
    teacher = pd.DataFrame([{"test_accuracy": 0.99, "validation_accuracy": np.nan}])
    students = pd.DataFrame({"iteration": [1], "test_accuracy": [0.95],
                             "goal_met": [False]})
    assert rules().stop_reason(teacher, students.iloc[0:0]) is None
    assert rules().stop_reason(teacher, students) is None
    assert "4.00 points below" in rules(max_accuracy_drop=1.0).stop_reason(teacher, students)
    met = students.assign(goal_met=True)
    assert "meets every --target_* goal" in rules(target_params=1).stop_reason(teacher, met)


def test_a_loss_of_exactly_the_allowed_points_neither_stops_nor_is_refused():
    """909/1000 against 899/1000 is 1.00 point on the split, though 100 × (0.909 − 0.899)
    is 1.0000000000000009 in floats: the rule must not stop the run on a student it then
    chooses as within the drop (seen in a run: "stopped: iteration 10's student is 1.00
    points below ... (--max_accuracy_drop=1)", with iteration 10 as its final student)."""
    assert 100 * (0.909 - 0.899) > 1.0                   # the float edge the test is about
    teacher = pd.DataFrame([{"test_accuracy": 0.909, "validation_accuracy": np.nan}])
    students = pd.DataFrame({"iteration": [1, 2], "test_accuracy": [0.905, 0.899],
                             "goal_met": [False, False], "cost": [80.0, 64.0]})
    checker = rules(max_accuracy_drop=1.0)
    assert checker.stop_reason(teacher, students) is None
    assert checker.choose_final(teacher, students) == 2
    worse = students.assign(test_accuracy=[0.905, 0.898])
    assert "1.10 points below" in checker.stop_reason(teacher, worse)
    assert checker.choose_final(teacher, worse) == 1


def stops_after(lost, drop, patience):
    """The number of students a run makes before its drop rule stops it (all of them when
    it never does), from the points each lost: a reference written from the rule's words,
    "stop once patience + 1 students in a row lost more than the drop"."""
    streak = 0
    for made, points in enumerate(lost, start=1):
        streak = streak + 1 if points > drop else 0
        if streak > patience:
            return made
    return len(lost)


@pytest.mark.parametrize("patience", [0, 1, 2, 3])
def test_drop_patience_stops_after_that_many_more_students_beyond_the_drop(patience):
    """Random runs of students that cross the drop and recover: the rule stops where the
    reference does, and the final student is still the cheapest within the drop."""
    rng = np.random.default_rng(patience)
    for _ in range(40):
        count = int(rng.integers(1, 12))
        lost = np.round(rng.uniform(-0.5, 2.0, count), 2)          # points, on 10,000
        teacher = pd.DataFrame([{"test_accuracy": 0.9, "validation_accuracy": np.nan}])
        students = pd.DataFrame({"iteration": np.arange(1, count + 1),
                                 "test_accuracy": 0.9 - lost / 100, "goal_met": False,
                                 "cost": 100.0 * 0.8 ** np.arange(1, count + 1)})
        checker = rules(max_accuracy_drop=1.0, drop_patience=patience)
        made = next((k for k in range(1, count + 1)
                     if checker.stop_reason(teacher, students.iloc[:k])), count)
        assert made == stops_after(lost, 1.0, patience)
        within = [i + 1 for i, points in enumerate(lost[:made]) if points <= 1.0]
        assert checker.choose_final(teacher, students.iloc[:made]) == max(within, default=0)


def test_drop_patience_names_itself_when_it_stops_and_needs_the_drop_rule():
    from epkd_tf.errors import ConfigError
    teacher = pd.DataFrame([{"test_accuracy": 0.99, "validation_accuracy": np.nan}])
    students = pd.DataFrame({"iteration": [1, 2, 3], "test_accuracy": [0.95, 0.97, 0.96],
                             "goal_met": False})
    reason = rules(max_accuracy_drop=1.0, drop_patience=2).stop_reason(teacher, students)
    assert reason == ("iteration 3's student is 3.00 points below the teacher on the test "
                      "split (--max_accuracy_drop=1), the 3 last students in a row lost "
                      "more (--drop_patience=2)")
    assert rules(max_accuracy_drop=1.0, drop_patience=3).stop_reason(teacher, students) is None
    with pytest.raises(ConfigError, match="--drop_patience=2 .*needs --max_accuracy_drop"):
        BudgetConfig(drop_patience=2)
    with pytest.raises(ConfigError, match="--drop_patience=-1"):
        BudgetConfig(max_accuracy_drop=1.0, drop_patience=-1)
    # Without the drop rule it is not one of the run's settings (flags.txt leaves it out).
    assert BudgetConfig().inactive() == ("drop_patience",)
    assert BudgetConfig(max_accuracy_drop=0.5).inactive() == ()


@pytest.mark.parametrize("name, expected", [("params", 1234.0), ("size", 5e5),
                                            ("macs", 77.0), ("latency", None)])
def test_each_measure_reads_its_cost_off_the_standard_measurements(name, expected):
    measure = make_measure(name)
    got = measure.from_costs(FakeCosts(), 77.0)
    assert got == (pytest.approx(expected) if expected is not None else None)


# -- how noisy the accuracy rule is ----------------------------------------------------
def simulated_se(p: float, n: int, draws: int = 400_000) -> float:
    """The standard deviation, in points, of the difference of two accuracies with true
    value p measured on n examples each with independent errors: NumPy's binomial draws,
    independent of accuracy_difference_se's formula."""
    rng = np.random.default_rng(0)
    correct = rng.binomial(n, p, size=(2, draws))
    return float(np.std(100 * (correct[0] - correct[1]) / n))


@pytest.mark.parametrize("p, n", [(0.9, 1200), (0.99, 1200), (0.9, 6000), (0.5, 300)])
def test_the_standard_error_is_that_of_two_binomial_accuracies(p, n):
    from epkd_tf.budget.stop import accuracy_difference_se
    assert accuracy_difference_se(p, n) == pytest.approx(simulated_se(p, n), rel=0.02)


@pytest.mark.parametrize("p, n, drop", [
    (0.9, 1200, 0.5),       # 2 SE = 2.4 points: warned
    (0.99, 1200, 0.5),      # 2 SE = 0.81: warned (one point = 12 images)
    (0.99, 6000, 0.5),      # 2 SE = 0.36: not
    (0.9, 60000, 1.0),      # 2 SE = 0.35: not
    (0.95, 10000, 0.5),     # 2 SE = 0.62: warned
])
def test_the_start_up_warning_comes_when_two_standard_errors_exceed_the_drop(p, n, drop):
    """The threshold against the simulated standard error; the line gives the split's size,
    the standard error in points and the allowed drop."""
    from epkd_tf.budget.stop import noise_warning
    teacher = pd.DataFrame([{"test_accuracy": p, "validation_accuracy": np.nan}])
    line = rules(max_accuracy_drop=drop).noise_warning(teacher, n)
    se = simulated_se(p, n)
    assert (line is not None) == (2 * se > drop)
    if line:
        assert f"--max_accuracy_drop={drop:g}" in line and f"{n:,} examples" in line
        import re
        shown = float(re.search(r"accuracies near [\d.]+% is ([\d.]+) points", line).group(1))
        assert shown == pytest.approx(se, rel=0.03, abs=0.01)
        assert "test split" in line and "\n" not in line
        # Both remedies are named: more examples, or going on past a noisy failure.
        assert "--validation_split" in line and "--drop_patience" in line
    assert noise_warning(None, n, p, "test") is None          # no accuracy rule
    assert rules().noise_warning(teacher, n) is None


def test_a_perfect_teacher_on_a_small_split_is_not_read_as_noise_free():
    from epkd_tf.budget.stop import noise_warning
    assert noise_warning(1.0, 100, 1.0, "validation") is not None
    assert "validation split" in noise_warning(0.5, 1200, float("nan"), "validation")


@pytest.mark.parametrize("n, agree, p", [(1200, 0.9, 0.85), (12000, 0.88, 0.84), (300, 0.5, 0.5)])
def test_the_paired_standard_error_is_the_spread_of_paired_differences(n, agree, p):
    """Teacher and student right on the same examples except a disagreeing fraction: the
    paired standard error equals the standard deviation of the difference over many
    redrawn splits of n examples (NumPy resampling, independent of the formula), and is
    below the cautious figure of independent errors."""
    from epkd_tf.budget.stop import accuracy_difference_se, paired_difference_se
    rng = np.random.default_rng(0)
    population = 200_000
    teacher = rng.random(population) < p
    # The student copies the teacher except on a random (1 - agree) of the examples,
    # where it is right with probability p.
    differs = rng.random(population) > agree
    student = np.where(differs, rng.random(population) < p, teacher)
    splits = rng.integers(0, population, size=(4000, n))
    spread = np.std(100 * (student[splits].mean(1) - teacher[splits].mean(1)))
    ses = [paired_difference_se(teacher[s], student[s]) for s in splits[:200]]
    assert np.median(ses) == pytest.approx(spread, rel=0.06)
    assert np.median(ses) < accuracy_difference_se(p, n)


def test_the_paired_standard_error_of_identical_or_mismatched_records():
    from epkd_tf.budget.stop import paired_difference_se
    same = np.array([True, False, True])
    assert paired_difference_se(same, same) == 0.0
    # One example of four the student alone gets right: b=1, c=0, n=4.
    assert paired_difference_se([1, 0, 1, 0], [1, 1, 1, 0]) == pytest.approx(
        100 * np.sqrt(1 - 1 / 4) / 4)
    with pytest.raises(ValueError, match="equally long, non-empty"):
        paired_difference_se([True], [True, False])
    with pytest.raises(ValueError, match="equally long, non-empty"):
        paired_difference_se([], [])
