"""The teacher zoo: every built-in builds for CIFAR and MNIST shapes, switches to its
ImageNet layout on large inputs, scales with ``width``; ``applications.*`` resolve."""
import epkd_tf  # noqa: F401  (before TensorFlow)

import numpy as np
import pytest
from tf_keras import layers

from epkd_tf.models import application_names, build_model, model_names

# Hidden widths small enough to build the deep models in a fraction of a second.
SMALL = 0.125


def _logits_shape(model, shape, n=2):
    return tuple(model(np.zeros((n, *shape), np.float32), training=False).shape)


def _layer_types(model):
    return {type(layer).__name__ for layer in model.layers}


@pytest.mark.integration
@pytest.mark.parametrize("name", model_names())
@pytest.mark.parametrize("shape", [(32, 32, 3), (28, 28, 1)])
def test_every_model_builds_logits(name, shape):
    model = build_model(name, shape, 10, width=SMALL)
    assert _logits_shape(model, shape) == (2, 10)
    last = model.layers[-1]
    assert last.name == "logits" and isinstance(last, layers.Dense)
    assert last.get_config()["activation"] == "linear"
    # Flat functional models: the channel analysis cannot look inside nested ones.
    assert not any(hasattr(layer, "layers") for layer in model.layers)


def _hidden_widths(model):
    return [layer.output_shape[-1] for layer in model.layers
            if isinstance(layer, (layers.Conv2D, layers.Dense)) and layer.name != "logits"]


@pytest.mark.integration
@pytest.mark.parametrize("name", model_names())
def test_width_scales_every_hidden_layer(name):
    narrow = build_model(name, (32, 32, 3), 10, width=SMALL)
    wide = build_model(name, (32, 32, 3), 10, width=2 * SMALL)
    pairs = list(zip(_hidden_widths(narrow), _hidden_widths(wide)))
    assert pairs and all(abs(w - 2 * n) <= 1 for n, w in pairs)   # up to rounding
    assert wide.count_params() > 1.5 * narrow.count_params()


@pytest.mark.unit
def test_width_rounds_and_keeps_at_least_one_unit():
    assert build_model("lenet300_100", (28, 28, 1), 10, width=0.5).get_layer(
        "fc1").units == 150
    tiny = build_model("lenet5", (28, 28, 1), 10, width=1e-3)
    assert tiny.get_layer("conv1").filters == 1 and tiny.get_layer("fc1").units == 1
    assert build_model("lenet5", (28, 28, 1), 10).count_params() == 431_080   # width 1.0


@pytest.mark.unit
def test_resnet_stems_follow_the_input_size():
    cifar = build_model("resnet18", (32, 32, 3), 10, width=SMALL)
    imagenet = build_model("resnet18", (128, 128, 3), 10, width=SMALL)
    assert cifar.get_layer("stem_conv").kernel_size == (3, 3)
    assert cifar.get_layer("stem_conv").strides == (1, 1)
    assert "MaxPooling2D" not in _layer_types(cifar)
    assert imagenet.get_layer("stem_conv").kernel_size == (7, 7)
    assert imagenet.get_layer("stem_conv").strides == (2, 2)
    assert isinstance(imagenet.get_layer("stem_pool"), layers.MaxPooling2D)
    # The CIFAR stem keeps full resolution into stage 1; the ImageNet one divides by 4.
    assert cifar.get_layer("stage1_block1_out").output_shape[1:3] == (32, 32)
    assert imagenet.get_layer("stage1_block1_out").output_shape[1:3] == (32, 32)


@pytest.mark.unit
def test_resnet_blocks_and_projections():
    r50 = build_model("resnet50", (32, 32, 3), 10, width=SMALL)
    adds = [la.name for la in r50.layers if isinstance(la, layers.Add)]
    assert len(adds) == 3 + 4 + 6 + 3
    # Bottleneck expansion 4: the first block projects 8 -> 32 channels even at stride 1.
    assert r50.get_layer("stage1_block1_proj").filters == 4 * r50.get_layer(
        "stage1_block1_conv1").filters
    r18 = build_model("resnet18", (32, 32, 3), 10, width=SMALL)
    assert len([la for la in r18.layers if isinstance(la, layers.Add)]) == 8
    with pytest.raises(ValueError):
        r18.get_layer("stage1_block1_proj")          # same stride and width: identity
    assert r18.get_layer("stage2_block1_proj").strides == (2, 2)


@pytest.mark.unit
@pytest.mark.parametrize("name,cifar_fc,imagenet_fc", [("vgg16", 512, 4096),
                                                       ("alexnet", 1024, 4096)])
def test_classifiers_switch_at_imagenet_size(name, cifar_fc, imagenet_fc):
    cifar = build_model(name, (32, 32, 3), 10, width=SMALL)
    imagenet = build_model(name, (128, 128, 3), 10, width=SMALL)
    assert cifar.get_layer("fc1").units == round(cifar_fc * SMALL)
    assert imagenet.get_layer("fc2").units == round(imagenet_fc * SMALL)
    assert "Dropout" in _layer_types(imagenet)
    assert _logits_shape(imagenet, (128, 128, 3), n=1) == (1, 10)
    if name == "vgg16":
        convs = [la for la in cifar.layers if isinstance(la, layers.Conv2D)]
        assert len(convs) == 13
        assert "fc2" not in [la.name for la in cifar.layers]
    else:
        assert cifar.get_layer("conv1").kernel_size == (3, 3)
        assert imagenet.get_layer("conv1").kernel_size == (11, 11)
        assert imagenet.get_layer("conv1").strides == (4, 4)


@pytest.mark.unit
def test_inception_modules_and_stems():
    cifar = build_model("inception", (32, 32, 3), 10, width=SMALL)
    imagenet = build_model("inception", (128, 128, 3), 10, width=SMALL)
    concats = [la for la in cifar.layers if isinstance(la, layers.Concatenate)]
    assert len(concats) == 9 and all(len(c.input) == 4 for c in concats)
    assert cifar.get_layer("stem_conv").strides == (1, 1)
    assert imagenet.get_layer("stem_conv1").strides == (2, 2)
    assert isinstance(imagenet.get_layer("stem_pool2"), layers.MaxPooling2D)
    assert _logits_shape(imagenet, (128, 128, 3), n=1) == (1, 10)


@pytest.mark.unit
def test_mobilenet_v2_blocks():
    cifar = build_model("mobilenet_v2", (32, 32, 3), 10, width=0.25)
    imagenet = build_model("mobilenet_v2", (128, 128, 3), 10, width=0.25)
    assert len([la for la in cifar.layers if isinstance(la, layers.DepthwiseConv2D)]) == 17
    assert len([la for la in cifar.layers if isinstance(la, layers.Add)]) == 10
    assert cifar.get_layer("block1_expand").filters == 6 * cifar.get_layer(
        "block0_project").filters
    # Stride 1 for the stem and stage 1 at CIFAR size: 32 -> 16 (block3) -> 8 (block6).
    assert cifar.get_layer("block2_project_bn").output_shape[1:3] == (32, 32)
    assert cifar.get_layer("block6_project_bn").output_shape[1:3] == (8, 8)
    assert imagenet.get_layer("stem_conv").strides == (2, 2)
    assert cifar.get_layer("gap").input_shape[1:3] == (4, 4)


@pytest.mark.integration
def test_applications_build_untrained_logits():
    model = build_model("applications.MobileNetV2", (32, 32, 3), 7, width=0.35)
    assert _logits_shape(model, (32, 32, 3), n=1) == (1, 7)
    assert model.layers[-1].get_config()["activation"] == "linear"
    assert "ResNet50" in application_names() and "resnet" not in application_names()


@pytest.mark.unit
@pytest.mark.parametrize("width", [0, -1.0, float("nan"), "wide"])
def test_invalid_width_is_refused(width):
    with pytest.raises(ValueError, match="width"):
        build_model("lenet5", (28, 28, 1), 10, width=width)


@pytest.mark.unit
def test_application_width_only_as_mobilenet_alpha():
    with pytest.raises(ValueError, match="width must be 1.0 for applications.ResNet50"):
        build_model("applications.ResNet50", (32, 32, 3), 10, width=0.5)


@pytest.mark.unit
def test_unknown_names_list_the_choices():
    with pytest.raises(ValueError) as info:
        build_model("resnet999", (32, 32, 3), 10)
    message = str(info.value)
    assert all(name in message for name in model_names())
    assert "applications.<Name>" in message
    with pytest.raises(ValueError, match="applications.ResNet50") as info:
        build_model("applications.NoSuch", (32, 32, 3), 10)
    assert "'NoSuch'" in str(info.value)
    with pytest.raises(ValueError, match="applications.ResNet50"):
        build_model("applications.ResNet05", (32, 32, 3), 10)   # a close match is offered
