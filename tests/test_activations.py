"""Layer outputs per example and the example chunks that fit a memory bound
(epkd_tf.activations): the criteria's and the int8 calibration's."""
import epkd_tf  # noqa: F401  (before TensorFlow)

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers_models import lenet5, residual_model  # noqa: E402

from epkd_tf.config import PruningConfig  # noqa: E402
from epkd_tf.activations import activation_values, chunk_examples  # noqa: E402
from epkd_tf.settings import default_of  # noqa: E402

pytestmark = pytest.mark.unit


def _values_per_example(model):
    """Every layer's output values for one example, from the layers' output shapes."""
    total = 0
    for layer in model.layers:
        shapes = layer.output_shape
        for shape in shapes if isinstance(shapes, list) else [shapes]:
            total += int(np.prod([d for d in shape[1:]]))
    return total


@pytest.mark.parametrize("builder", [lenet5, residual_model], ids=["lenet5", "residual"])
def test_activation_values_count_every_layer_output(builder):
    model = builder()
    assert activation_values(model) == _values_per_example(model) > 0


@pytest.mark.parametrize("builder", [lenet5, residual_model], ids=["lenet5", "residual"])
@pytest.mark.parametrize("copies", [1.0, 2.0])
def test_chunk_examples_fit_the_memory(builder, copies):
    model = builder()
    per_example = 4 * copies * _values_per_example(model)
    for examples in (1, 3, 17):
        memory = per_example * examples
        assert chunk_examples(model, memory, copies) == examples
        assert chunk_examples(model, memory - 1, copies) == max(1, examples - 1)


def test_chunk_examples_is_at_least_one():
    assert chunk_examples(lenet5(), 1) == 1


def test_scoring_memory_is_a_validated_setting():
    from epkd_tf.errors import ConfigError
    from epkd_tf.settings import with_flags
    assert default_of(PruningConfig, "scoring_memory_mb") == 1024
    assert with_flags(PruningConfig(), scoring_memory_mb=64).scoring_memory_mb == 64
    with pytest.raises(ConfigError, match="scoring_memory_mb"):
        with_flags(PruningConfig(), scoring_memory_mb=0)


@pytest.mark.parametrize("name", ["taylor", "oracle"])
def test_criteria_pass_the_setting(name, monkeypatch, forward_passes):
    """--scoring_memory_mb reaches the criterion: a 16 MB bound on a network of 8 MB of
    layer outputs per example makes passes of one example (16 MB holds 2 copies for
    Taylor; the oracle gives each half 8 MB), with the same scores."""
    from helpers_models import FakeData
    from epkd_tf.graph import analyze
    from epkd_tf.pruning import PruningContext, make_pruner
    from epkd_tf.settings import with_flags
    model = residual_model()
    graph = analyze(model)
    data = FakeData(model.input_shape[1:], model.output_shape[-1], num_train=12, seed=0)
    pruner = make_pruner(name, **({"batches": 1} if name == "taylor" else {"examples": 6}))
    whole = pruner.score(graph, PruningContext(data, PruningConfig(), seed=1, batch_size=6))
    forward_passes.clear()
    # The toy network has far less than 8 MB per example: fake a large one.
    monkeypatch.setattr("epkd_tf.activations.activation_values",
                        lambda model: 2 * 2 ** 20)
    config = with_flags(PruningConfig(), scoring_memory_mb=16)
    got = pruner.score(graph, PruningContext(data, config, seed=1, batch_size=6))
    assert forward_passes == [1] * 6
    np.testing.assert_allclose(got, whole, rtol=1e-5, atol=1e-7)
