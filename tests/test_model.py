"""M²CNN model: Table I geometry, the Multi-Cell switch, parameter arithmetic, the architecture
against Keras' own Inception-ResNet-v2, weight transfer 224 → 448 → 720 and local weight files.

No network: ImageNet weights are never requested; weight files are written here. The paper's
"m2cnn" variant is built once per resolution (module fixture); everything else uses "tiny".
"""

import json
import os
import re
import subprocess
import sys
from collections import Counter

import h5py
import keras
import numpy as np
import pytest

from m2cnn_tf import config
from m2cnn_tf import model as m2cnn
from m2cnn_tf.model import irv2, transfer

# Paper Table I (299 standing for its "256" column, see PAPER_NOTES.md): input → (before switch,
# after multi-cell).
TABLE_I = {
    224: ((5, 5), (5, 5)),
    299: ((8, 8), (8, 8)),
    448: ((12, 12), (5, 5)),
    720: ((21, 21), (4, 4)),
}
# Keras' own weight saving trips numpy 2's __array__(copy=...) deprecation; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
HEADS_PARAMETERS = (1536 + 1) * 5 + (1536 + 1) * 1  # Dense(5) and Dense(1) on 1536 pooled features
# Keras names these layers itself (auto-generated names), so they differ between builds.
AUTO_NAMED = re.compile(
    r"^(input_layer|conv2d|batch_normalization|activation|max_pooling2d|average_pooling2d|"
    r"custom_scale_layer)(_\d+)?$"
)


def randomise(variables, seed):
    """Gives every variable distinct random values (positive variances), so copies are visible."""
    rng = np.random.default_rng(seed)
    for v in variables:
        if v.path.endswith("moving_variance"):
            value = rng.uniform(0.5, 1.5, v.shape)
        else:
            value = rng.normal(0.0, 0.05, v.shape)
        v.assign(value.astype(v.dtype))


def layers_between(model, start, end):
    """The layers of ``model`` on paths from layer ``start`` (excluded) to ``end`` (included)."""
    part = keras.Model(model.get_layer(start).output, model.get_layer(end).output)
    return [l for l in part.layers if not isinstance(l, keras.layers.InputLayer)]


# The residual ``x + scale · r`` of an Inception-ResNet block: Keras' private CustomScaleLayer in
# Keras' network, irv2.ResidualScale in ours; the same computation and configuration.
RESIDUAL_SCALE_TYPES = ("CustomScaleLayer", irv2.ResidualScale.__name__)


def signature(layer):
    """Layer type, configuration without the name, weight shapes and parameter count."""
    cfg = {k: v for k, v in layer.get_config().items() if k != "name"}
    shapes = tuple(tuple(w.shape) for w in layer.weights)
    config_text = json.dumps(cfg, sort_keys=True, default=str)
    kind = type(layer).__name__
    kind = "residual scale" if kind in RESIDUAL_SCALE_TYPES else kind
    return kind, config_text, shapes, layer.count_params()


def write_imagenet_layout_h5(model, path):
    """Writes ``model``'s weights in the layout of Keras' downloadable ImageNet ``.h5`` files.

    That layout (Keras 2's HDF5 weights format, which Keras 3 still loads by layer order): root
    attribute ``layer_names``; one group per layer with attribute ``weight_names``
    ("conv2d_1/kernel:0", …) and one dataset per weight, trainable weights first.
    """
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [layer.name.encode("utf8") for layer in model.layers]
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.1.2"
        for layer in model.layers:
            group = f.create_group(layer.name)
            weights = layer.trainable_weights + layer.non_trainable_weights
            names = [f"{layer.name}/{w.name}:0".encode("utf8") for w in weights]
            group.attrs["weight_names"] = np.array(names, dtype=bytes)
            for name, weight in zip(names, weights):
                group.create_dataset(name.decode("utf8"), data=weight.numpy())


def graph_layers(build, input_shape):
    """The layers ``build`` adds on a fresh input of ``input_shape`` (input layer excluded)."""
    inputs = keras.Input(shape=input_shape)
    model = keras.Model(inputs, build(inputs))
    return [l for l in model.layers if not isinstance(l, keras.layers.InputLayer)]


# ----------------------------------------------------------------------------------------------
# fixtures
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keras_notop():
    """Keras' own InceptionResNetV2(include_top=False), the reference architecture."""
    keras.backend.clear_session()
    return keras.applications.InceptionResNetV2(
        include_top=False, weights=None, input_shape=(299, 299, 3)
    )


@pytest.fixture(scope="module")
def m2cnn_summaries():
    """The paper's variant, really built once at each Table I resolution, summarised, dropped."""
    summaries = {}
    for resolution in TABLE_I:
        keras.backend.clear_session()
        model = m2cnn.build_m2cnn(resolution, "m2cnn")
        summaries[resolution] = m2cnn.summarize(model, "m2cnn")
        summaries[resolution]["layer_names"] = {l.name for l in model.layers}
        del model
    keras.backend.clear_session()
    return summaries


@pytest.fixture(scope="module")
def tiny_summaries():
    summaries = {}
    for resolution in TABLE_I:
        model = m2cnn.build_m2cnn(resolution, "tiny")
        summaries[resolution] = m2cnn.summarize(model, "tiny")
    return summaries


@pytest.fixture(scope="module")
def notop_weights(tmp_path_factory):
    """A randomised Keras notop network, saved in both formats build_m2cnn accepts."""
    source = keras.applications.InceptionResNetV2(include_top=False, weights=None)  # any size
    randomise(source.weights, seed=7)
    folder = tmp_path_factory.mktemp("weights")
    files = {"keras3": str(folder / "notop.weights.h5"), "legacy": str(folder / "notop.h5")}
    source.save_weights(files["keras3"])
    write_imagenet_layout_h5(source, files["legacy"])  # the format of Keras' ImageNet file
    return source, files


# ----------------------------------------------------------------------------------------------
# geometry and the switch
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("resolution", sorted(TABLE_I))
def test_table_one_tiny(tiny_summaries, resolution):
    before, after = TABLE_I[resolution]
    assert tiny_summaries[resolution]["feature_map_sizes"] == {
        "before_switch": list(before),
        "after_multicell": list(after),
    }


@pytest.mark.parametrize("resolution", sorted(TABLE_I))
def test_table_one_m2cnn(m2cnn_summaries, resolution):
    before, after = TABLE_I[resolution]
    assert m2cnn_summaries[resolution]["feature_map_sizes"] == {
        "before_switch": list(before),
        "after_multicell": list(after),
    }


def test_switch_boundaries():
    assert [m2cnn.multicell_path(r) for r in (75, 349, 350, 699, 700, 2000)] == [
        "small", "small", "medium", "medium", "large", "large"
    ]
    expected = {
        349: {"basenet", "heads"},
        350: {"basenet", "medial_cells", "heads"},
        699: {"basenet", "medial_cells", "heads"},
        700: {"basenet", "medial_cells", "large_cells", "heads"},
    }
    for resolution, blocks in expected.items():
        model = m2cnn.build_m2cnn(resolution, "tiny")
        assert set(m2cnn.model_blocks(model)) == blocks, resolution


def test_paths_in_built_m2cnn(m2cnn_summaries):
    assert {r: s["path"] for r, s in m2cnn_summaries.items()} == {
        224: "small", 299: "small", 448: "medium", 720: "large"
    }
    names = m2cnn_summaries[720]["layer_names"]
    assert {"basenet", "medial_cells", "large_cells", "head_logits", "head_score"} <= names


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"resolution": 74}, "75"),
        ({"resolution": 0}, "75"),
        ({"resolution": 224.0}, "integer"),
        ({"resolution": "224"}, "integer"),
        ({"resolution": True}, "integer"),
        ({"resolution": None}, "integer"),
        ({"resolution": 224, "variant": "huge"}, r"\['m2cnn', 'tiny'\]"),
        ({"resolution": 224, "weights": "/nonexistent/notop.h5"}, "/nonexistent/notop.h5"),
    ],
)
def test_bad_arguments_raise_naming_allowed_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        m2cnn.build_m2cnn(**kwargs)


def test_multicell_path_rejects_bad_resolution():
    with pytest.raises(ValueError, match="75"):
        m2cnn.multicell_path(74)
    with pytest.raises(ValueError, match="integer"):
        m2cnn.multicell_path(350.0)


# ----------------------------------------------------------------------------------------------
# parameters and FLOPs
# ----------------------------------------------------------------------------------------------


def conv_bn(cin, cout, kh, kw):
    return kh * kw * cin * cout + 3 * cout  # conv without bias; BN beta, moving mean, variance


def reduction_b(c):  # Keras' mixed_7a on c channels
    return (
        conv_bn(c, 256, 1, 1) + conv_bn(256, 384, 3, 3)
        + conv_bn(c, 256, 1, 1) + conv_bn(256, 288, 3, 3)
        + conv_bn(c, 256, 1, 1) + conv_bn(256, 288, 3, 3) + conv_bn(288, 320, 3, 3)
    )


def block8(c):  # Keras' block8 on c channels: two branches, then a biased 1×1 conv to c
    return (
        conv_bn(c, 192, 1, 1)
        + conv_bn(c, 192, 1, 1) + conv_bn(192, 224, 1, 3) + conv_bn(224, 256, 3, 1)
        + (192 + 256) * c + c
    )


def cell_group(n):  # Reduction-B 1536 → 2528, n Block8, 1×1 projection back to 1536
    return reduction_b(1536) + n * block8(2528) + conv_bn(2528, 1536, 1, 1)


def test_m2cnn_224_parameters_are_keras_notop_plus_heads(m2cnn_summaries, keras_notop):
    summary = m2cnn_summaries[224]
    assert summary["parameters"]["basenet"]["total"] == keras_notop.count_params() == 54_336_736
    assert summary["parameters"]["heads"]["total"] == HEADS_PARAMETERS == 9_222
    assert summary["total_parameters"] == keras_notop.count_params() + HEADS_PARAMETERS
    assert m2cnn_summaries[299]["total_parameters"] == summary["total_parameters"]


def test_extra_parameters_equal_cell_arithmetic(m2cnn_summaries):
    base = m2cnn_summaries[224]["total_parameters"]
    medial, large = cell_group(10), cell_group(5)  # N3 = 10, N4 = 5
    assert (medial, large) == (32_209_408, 20_162_048)
    s448, s720 = m2cnn_summaries[448], m2cnn_summaries[720]
    assert s448["total_parameters"] - base == medial
    assert s720["total_parameters"] - base == medial + large
    assert s448["parameters"]["medial_cells"]["total"] == medial
    assert s720["parameters"]["medial_cells"]["total"] == medial
    assert s720["parameters"]["large_cells"]["total"] == large
    # ...and the summary prints the same arithmetic, computed from config alone.
    assert s720["cell_parameters_arithmetic"] == {"medial_cells": medial, "large_cells": large}
    assert s448["cell_parameters_arithmetic"] == {"medial_cells": medial}
    assert m2cnn_summaries[224]["cell_parameters_arithmetic"] == {}
    assert s720["total_parameters"] == 106_717_414


def test_tiny_cell_parameters_equal_arithmetic(tiny_summaries):
    s720 = tiny_summaries[720]
    assert s720["parameters"]["medial_cells"]["total"] == cell_group(1)
    assert s720["parameters"]["large_cells"]["total"] == cell_group(1)
    assert s720["cell_parameters_arithmetic"] == {
        "medial_cells": cell_group(1),
        "large_cells": cell_group(1),
    }


def test_flops_are_twice_conv_and_dense_multiply_adds(m2cnn_summaries):
    s299 = m2cnn_summaries[299]
    assert s299["macs_per_image"]["heads"] == 1536 * 5 + 1536 * 1
    # Inception-ResNet-v2 at 299 is quoted at ≈ 13.2 G multiply-adds (e.g. timm's model table).
    assert 12.5e9 < s299["macs_per_image"]["basenet"] < 13.5e9
    for summary in m2cnn_summaries.values():
        assert summary["total_flops_per_image"] == 2 * summary["total_macs_per_image"]
        assert summary["total_macs_per_image"] == sum(summary["macs_per_image"].values())
    # Cells on 12×12 → 5×5 maps are cheap next to BaseNet at 448.
    s448 = m2cnn_summaries[448]["macs_per_image"]
    assert 0 < s448["medial_cells"] < s448["basenet"]


def test_summary_text_720(m2cnn_summaries):
    text = m2cnn.format_summary(m2cnn_summaries[720])
    assert "path 'large'" in text
    assert "before switch 21×21" in text and "after multi-cell 4×4" in text
    assert "32,209,408 ✓" in text and "20,162,048 ✓" in text and "✗" not in text
    assert "106,717,414" in text and "FLOPs per image" in text
    json.dumps(m2cnn_summaries[720], default=sorted)  # serialisable (layer_names is a test extra)


def test_summary_command_runs():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, "-m", "m2cnn_tf.model", "--resolution=448", "--variant=tiny"],
        capture_output=True, text=True, timeout=120, env=env, check=True,
    )
    out = result.stdout
    assert "path 'medium'" in out and "before switch 12×12" in out and "after multi-cell 5×5" in out
    assert f"{cell_group(1):,} ✓" in out and "FLOPs per image" in out


# ----------------------------------------------------------------------------------------------
# architecture against Keras' own network
# ----------------------------------------------------------------------------------------------


def test_reduction_b_is_keras_mixed_7a(keras_notop):
    keras_layers = layers_between(keras_notop, "block17_20_ac", "mixed_7a")
    ours = graph_layers(lambda x: m2cnn.reduction_b(x, name="mixed_7a"), (8, 8, 1088))
    assert len(keras_layers) == len(ours) == 3 * 7 + 2  # 7 conv_bn, max-pool, concat
    assert Counter(map(signature, ours)) == Counter(map(signature, keras_layers))
    assert sum(l.count_params() for l in ours) == reduction_b(1088)


def test_block8_cells_are_keras_block8(keras_notop):
    keras_layers = layers_between(keras_notop, "mixed_7a", "block8_1_ac")
    ours = graph_layers(lambda x: irv2.block8(x, block_idx="medial_1"), (8, 8, 2080))
    assert Counter(map(signature, ours)) == Counter(map(signature, keras_layers))
    assert sum(l.count_params() for l in ours) == block8(2080)
    # The cell group's closing projection is a conv_7b-style 1×1 conv + BN + ReLU.
    conv_7b = [keras_notop.get_layer(n) for n in ("conv_7b", "conv_7b_bn", "conv_7b_ac")]
    ours = graph_layers(lambda x: irv2.conv2d_bn(x, 1536, 1, name="conv_7b"), (8, 8, 2080))
    assert list(map(signature, ours)) == list(map(signature, conv_7b))


def test_cells_in_built_model_have_keras_layers():
    model = m2cnn.build_m2cnn(448, "tiny")
    medial = model.get_layer("medial_cells")
    names = {l.name for l in medial.layers}
    assert {"medial_reduction_b", "block8_medial_1_mixed", "block8_medial_1_conv",
            "block8_medial_1_ac", "block8_medial_1_scale", "medial_conv", "medial_conv_bn",
            "medial_conv_ac"} <= names
    assert tuple(medial.get_layer("medial_reduction_b").output.shape) == (None, 5, 5, 2528)
    assert tuple(medial.output.shape) == (None, 5, 5, 1536)
    scales = [l.scale for l in medial.layers if isinstance(l, irv2.ResidualScale)]
    assert scales == [config.MODEL.block8_scale]


def test_basenet_builder_is_keras_constructor():
    """With the paper's repeats, irv2's builder (behind the tiny variant) is Keras' very network:
    the same layers, names and variable paths (so checkpoints restore), and the same outputs."""
    shape = (224, 224, 3)
    keras.backend.clear_session()  # both networks name their layers from fresh counters
    theirs = keras.applications.InceptionResNetV2(include_top=False, weights=None,
                                                  input_shape=shape)
    keras.backend.clear_session()
    ours = irv2.inception_resnet_v2_notop(shape, config.VARIANTS["m2cnn"], name=theirs.name)
    assert len(ours.layers) == len(theirs.layers)
    for mine, keras_layer in zip(ours.layers, theirs.layers):
        assert signature(mine) == signature(keras_layer), (mine.name, keras_layer.name)
        if not isinstance(mine, irv2.ResidualScale):  # Keras leaves its scale layers unnamed
            assert mine.name == keras_layer.name
    assert [v.path for v in ours.weights] == [v.path for v in theirs.weights]
    randomise(theirs.weights, seed=3)
    ours.set_weights(theirs.get_weights())  # same order of the same shapes
    x = np.random.default_rng(0).uniform(-1, 1, (1,) + shape).astype("float32")
    np.testing.assert_allclose(ours(x).numpy(), theirs(x).numpy(), rtol=0, atol=1e-5)
    keras.backend.clear_session()


def test_residual_scale_is_a_serialisable_layer(tmp_path):
    inputs = keras.Input(shape=(5, 5, 64))
    block = keras.Model(inputs, irv2.block8(inputs, block_idx="t"))
    layer = block.get_layer("block8_t_scale")
    assert layer.get_config()["scale"] == config.MODEL.block8_scale
    path = str(tmp_path / "block8.keras")
    block.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.get_layer("block8_t_scale"), irv2.ResidualScale)
    x = np.random.default_rng(1).normal(size=(2, 5, 5, 64)).astype("float32")
    np.testing.assert_array_equal(loaded(x).numpy(), block(x).numpy())


def test_package_uses_no_private_keras_api():
    package = os.path.dirname(os.path.dirname(os.path.abspath(m2cnn.__file__)))
    offenders = []
    for folder, _, names in os.walk(package):
        for name in names:
            if name.endswith(".py"):
                with open(os.path.join(folder, name), encoding="utf8") as f:
                    text = f.read()
                if re.search(r"^\s*(from|import)\s+keras\.src", text, re.MULTILINE):
                    offenders.append(f"{name} imports keras.src")
                if "._inbound_nodes" in text:
                    offenders.append(f"{name} reads a layer's _inbound_nodes")
    assert not offenders


def test_tiny_basenet_keeps_keras_names():
    basenet = m2cnn.build_m2cnn(224, "tiny").get_layer("basenet")
    names = [l.name for l in basenet.layers]
    for name in ("mixed_5b", "block35_1_ac", "mixed_6a", "block17_1_ac", "mixed_7a",
                 "block8_10_conv", "conv_7b", "conv_7b_ac"):
        assert name in names
    assert not any(n.startswith(("block35_2", "block17_2", "block8_1_")) for n in names)
    assert names[-1] == "conv_7b_ac"


# ----------------------------------------------------------------------------------------------
# inputs, outputs, blocks
# ----------------------------------------------------------------------------------------------


def test_outputs_and_input_rescaling():
    model = m2cnn.build_m2cnn(224, "tiny")
    pixels = np.random.default_rng(0).integers(0, 256, (2, 224, 224, 3)).astype("uint8")
    out = model(pixels, training=False)
    assert set(out) == {"logits", "score"}
    assert tuple(out["logits"].shape) == (2, config.NUM_GRADES)
    assert tuple(out["score"].shape) == (2,)
    again = model(pixels.astype("float32"), training=False)
    np.testing.assert_array_equal(out["logits"].numpy(), again["logits"].numpy())
    rescaled = model.get_layer("rescale")(pixels.astype("float32")).numpy()
    expected = keras.applications.inception_resnet_v2.preprocess_input(pixels.astype("float32"))
    np.testing.assert_allclose(rescaled, expected, atol=1e-6)
    assert rescaled.min() >= -1 and rescaled.max() <= 1


def test_blocks_name_variables_and_freeze():
    model = m2cnn.build_m2cnn(720, "tiny")
    variables = m2cnn.block_variables(model)
    assert list(variables) == ["basenet", "medial_cells", "large_cells", "heads"]
    for block, vs in variables.items():
        assert vs and all(v.path.startswith(block + "/") for v in vs), block
    paths = [v.path for vs in variables.values() for v in vs]
    assert len(paths) == len(set(paths)) == len(model.weights)
    for layer in m2cnn.model_blocks(model)["basenet"]:
        layer.trainable = False
    trainable = {v.path for v in model.trainable_variables}
    assert trainable and not any(p.startswith("basenet/") for p in trainable)


# ----------------------------------------------------------------------------------------------
# weight transfer 224 → 448 → 720
# ----------------------------------------------------------------------------------------------


def _values(variables):
    return {v.path: v.numpy().copy() for v in variables}


def _check_transfer(source, target, report, new_blocks):
    source_vars, target_vars = m2cnn.block_variables(source), m2cnn.block_variables(target)
    assert set(report.new) == set(new_blocks)
    assert set(report.restored) == set(target_vars) - set(new_blocks)
    for block in report.restored:
        assert list(report.restored[block]) == [v.path for v in target_vars[block]]
        for s, t in zip(source_vars[block], target_vars[block]):
            np.testing.assert_array_equal(s.numpy(), t.numpy(), err_msg=t.path)  # bit-exact
    assert report.new_paths == {v.path for b in new_blocks for v in target_vars[b]}
    assert report.restored_paths | report.new_paths == {v.path for v in target.weights}
    assert not report.restored_paths & report.new_paths


def test_transfer_224_448_720_tiny():
    keras.backend.clear_session()
    m224, m448, m720 = (m2cnn.build_m2cnn(r, "tiny") for r in (224, 448, 720))
    randomise(m224.weights, seed=1)  # "trained at 224"
    fresh448 = _values(m448.weights)

    report = m2cnn.transfer_weights(m224, m448)
    _check_transfer(m224, m448, report, new_blocks=["medial_cells"])
    now448 = _values(m448.weights)
    for path in report.new_paths:  # new cells untouched
        np.testing.assert_array_equal(now448[path], fresh448[path])
    restored, new = report.partition(m448.trainable_variables)  # LR1 and LR2 groups
    medial = m448.get_layer("medial_cells").trainable_variables
    assert {v.path for v in new} == {v.path for v in medial}
    assert len(restored) + len(new) == len(m448.trainable_variables)
    as_json = json.loads(json.dumps(report.to_dict()))
    assert as_json["new"]["medial_cells"] == list(report.new["medial_cells"])
    assert as_json["counts"]["restored"]["heads"] == 4

    randomise(m448.weights, seed=2)  # "trained at 448"
    report = m2cnn.transfer_weights(m448, m720)
    _check_transfer(m448, m720, report, new_blocks=["large_cells"])
    assert set(report.restored) == {"basenet", "medial_cells", "heads"}


def test_transfer_downwards_reports_unused_blocks():
    source, target = m2cnn.build_m2cnn(448, "tiny"), m2cnn.build_m2cnn(224, "tiny")
    report = m2cnn.transfer_weights(source, target)
    assert report.source_only == ("medial_cells",) and report.new == {}


def test_transfer_shape_mismatch_names_the_variable(monkeypatch):
    source = m2cnn.build_m2cnn(224, "tiny")
    monkeypatch.setattr(config, "NUM_GRADES", 3)
    target = m2cnn.build_m2cnn(224, "tiny")
    before = _values(target.weights)
    with pytest.raises(ValueError, match=r"heads/head_logits/kernel.*\(1536, 3\).*\(1536, 5\)"):
        m2cnn.transfer_weights(source, target)
    after = _values(target.weights)  # checked before assigning: nothing half-restored
    assert all(np.array_equal(before[p], after[p]) for p in before)


def test_partition_rejects_foreign_variables():
    source, target = m2cnn.build_m2cnn(224, "tiny"), m2cnn.build_m2cnn(448, "tiny")
    report = m2cnn.transfer_weights(source, target)
    with pytest.raises(ValueError, match="not covered"):
        report.partition(source.trainable_variables)


# ----------------------------------------------------------------------------------------------
# local weight files (never the network)
# ----------------------------------------------------------------------------------------------


def test_m2cnn_loads_local_notop_file(notop_weights):
    source, files = notop_weights
    model = m2cnn.build_m2cnn(224, "m2cnn", weights=files["keras3"])
    basenet = model.get_layer("basenet").weights
    assert len(basenet) == len(source.weights)
    for s, t in zip(source.weights, basenet):
        np.testing.assert_array_equal(s.numpy(), t.numpy(), err_msg=t.path)
    keras.backend.clear_session()


@pytest.mark.parametrize("file_format", ["legacy", "keras3"])
def test_tiny_loads_matching_units_of_a_notop_file(notop_weights, file_format):
    source, files = notop_weights
    model = m2cnn.build_m2cnn(224, "tiny", weights=files[file_format])
    basenet = model.get_layer("basenet")
    source_units, tiny_units = transfer._basenet_units(source), transfer._basenet_units(basenet)
    assert list(tiny_units) == [
        "mixed_5b", "block35_1_ac", "mixed_6a", "block17_1_ac", "mixed_7a", "conv_7b_ac"
    ]
    for unit, layers in tiny_units.items():
        ws = [w for l in layers for w in l.weights]
        for s, t in zip([w for l in source_units[unit] for w in l.weights], ws, strict=True):
            np.testing.assert_array_equal(s.numpy(), t.numpy(), err_msg=f"{unit}: {t.path}")
    # Up to block35_1 the two networks are the same function, so the units went to the right
    # layers (also where two convs have the same shape).
    x = np.random.default_rng(5).uniform(-1, 1, (1, 224, 224, 3)).astype("float32")
    cut = lambda m: keras.Model(m.input, m.get_layer("block35_1_ac").output)  # noqa: E731
    np.testing.assert_array_equal(cut(basenet)(x).numpy(), cut(source)(x).numpy())
