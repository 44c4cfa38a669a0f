"""Flags generated from the config dataclasses (m2cnn_tf/util/config_flags.py), and back."""

import dataclasses
import os
import re
import subprocess
import sys
from typing import Optional

import pytest
from absl import flags

from conftest import REPO_ROOT
from m2cnn_tf import config
from m2cnn_tf.config import BUILDER, TRAIN, BuilderConfig, TrainConfig, setting
from m2cnn_tf.data import sources
from m2cnn_tf.util import config_flags

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")


def _flags(config_class=TrainConfig, defaults=TRAIN, argv=(), **kwargs):
    """A fresh absl registry with the config's flags, after parsing ``argv``."""
    registry = flags.FlagValues()
    config_flags.define_flags(config_class, defaults, flag_values=registry, **kwargs)
    registry(["prog", *argv])
    return registry


def _from(registry, config_class=TrainConfig, defaults=TRAIN, **kwargs):
    return config_flags.config_from_flags(config_class, defaults, flag_values=registry, **kwargs)


def test_every_field_with_help_text_is_a_flag_with_its_type_default_and_help():
    registry = _flags()
    helped = [f for f in dataclasses.fields(TrainConfig) if config.FLAG_HELP in f.metadata]
    assert {f.name for f in helped} == set(registry)
    # the flags train.py declared by hand (but --quiet), issue 16's multicell, heads,
    # lr_schedule, warmup_steps, lr_step_fractions, lr_step_factor, deterministic, and issue
    # 17's recompute, accumulate_steps, batch_norm, profile_steps
    assert len(helped) == 25 + 7 + 4
    for field in helped:
        flag = registry[field.name]
        assert flag.help.endswith(field.metadata[config.FLAG_HELP])  # enums prefix <a|b>:
        default = getattr(TRAIN, field.name)
        if isinstance(default, tuple):
            assert [float(v) for v in flag.default] == list(default)
        else:
            assert flag.default == default and type(flag.default) is type(default), field.name
    assert registry["variant"].parser.enum_values == sorted(config.VARIANTS)
    assert registry["strategy"].parser.enum_values == ["default", "mirrored", "multiworker",
                                                       "tpu"]
    # constants of the loop are not flags
    assert "adam_beta_1" not in registry and "model_dir_template" not in registry
    assert _from(registry) == TRAIN


def test_the_command_line_becomes_the_config():
    registry = _flags(argv=["--resolution=448", "--variant=tiny", "--loss_weights=1,0.5",
                            "--noaugment", "--lr_new=0.01", "--model_dir=runs/x"])
    assert _from(registry) == dataclasses.replace(
        TRAIN, resolution=448, variant="tiny", loss_weights=(1.0, 0.5), augment=False,
        lr_new=0.01, model_dir="runs/x")
    with pytest.raises(flags.IllegalFlagValueError):
        _flags(argv=["--variant=huge"])


def test_a_list_element_that_does_not_convert_names_the_flag_and_the_value():
    with pytest.raises(ValueError, match=r"^--loss_weights must be numbers, got 1,x$"):
        _from(_flags(argv=["--loss_weights=1,x"]))
    registry = _flags(BuilderConfig, BUILDER, argv=["--resolutions=224,big"])
    with pytest.raises(ValueError, match=r"^--resolutions must be integers, got 224,big$"):
        _from(registry, BuilderConfig, BUILDER)
    registry = _flags(BuilderConfig, BUILDER, argv=["--resolutions="])
    assert _from(registry, BuilderConfig, BUILDER).resolutions == ()


def test_with_a_base_only_flags_given_explicitly_replace_its_values():
    preset = dataclasses.replace(TRAIN, resolution=448, batch_size=4, variant="tiny", seed=7)
    # --resolution=224 repeats the default, but it was given: it wins over the preset
    registry = _flags(argv=["--resolution=224", "--batch_size=8"])
    result = _from(registry, base=preset)
    assert (result.resolution, result.batch_size) == (224, 8)
    assert (result.variant, result.seed) == ("tiny", 7)  # not on the command line: the preset's
    assert result == dataclasses.replace(preset, resolution=224, batch_size=8)
    # nothing given: the base as it is
    assert _from(_flags(), base=preset) == preset
    # a flag set in code counts as given too
    registry = _flags()
    registry.seed = 3
    assert config_flags.given("seed", registry) and not config_flags.given("variant", registry)
    assert _from(registry, base=preset).seed == 3
    with pytest.raises(TypeError, match="base must be a TrainConfig"):
        _from(_flags(), base=BUILDER)


def test_exclude_and_overrides():
    registry = _flags(exclude=("tpu", "cpu_devices"), overrides={"seed": "Seed of this demo."})
    assert "tpu" not in registry and "cpu_devices" not in registry
    assert registry["seed"].help == "Seed of this demo."
    preset = dataclasses.replace(TRAIN, tpu="grpc://x")
    assert _from(registry, base=preset, exclude=("tpu", "cpu_devices")).tpu == "grpc://x"
    with pytest.raises(ValueError, match="not flags of TrainConfig: adam_beta_1"):
        _flags(exclude=("adam_beta_1",))
    with pytest.raises(ValueError, match="not flags here: nothing"):
        _flags(overrides={"nothing": "?"})


@dataclasses.dataclass(frozen=True)
class _NewSettings:
    count: int = setting(3, "How many.")
    ratio: float = setting(0.5, "How much.")
    name: Optional[str] = setting(None, "Optional text.")
    mode: str = setting("fast", "Which way.", choices=("fast", "exact"))
    tags: tuple[str, ...] = setting(("a", "b"), "Labels.")
    verbose: bool = setting(False, "Say more.")
    constant: float = 2.5  # no help text: not a flag


def test_a_new_setting_is_one_field():
    registry = _flags(_NewSettings, _NewSettings(), argv=[
        "--count=4", "--ratio=2", "--name=x", "--mode=exact", "--tags=c", "--verbose"])
    assert set(registry) == {"count", "ratio", "name", "mode", "tags", "verbose"}
    assert _from(registry, _NewSettings, _NewSettings()) == _NewSettings(
        count=4, ratio=2.0, name="x", mode="exact", tags=("c",), verbose=True)
    assert _from(_flags(_NewSettings, _NewSettings()), _NewSettings, _NewSettings()) == \
        _NewSettings()

    @dataclasses.dataclass(frozen=True)
    class Unsupported:
        table: dict = setting(None, "No flag holds this.")

    with pytest.raises(TypeError, match=r"Unsupported.table: no flag type"):
        _flags(Unsupported, Unsupported())


def test_the_scripts_offer_every_field_as_a_flag_under_their_own_name():
    for script, classes, extra in (
            ("train.py", [TrainConfig], ["quiet"]),
            ("build_tfrecords.py", [BuilderConfig, sources.SourceOptions],
             ["quiet", "output_dir"])):
        result = subprocess.run([sys.executable, str(REPO_ROOT / script), "--helpshort"],
                                capture_output=True, text=True, env=ENV, timeout=300)
        assert f"{script}:" in result.stdout, result.stdout[:2000]  # the script's own flags
        names = [f.name for c in classes for f in config_flags.flag_fields(c)] + extra
        for name in names:
            assert re.search(rf"--(\[no\])?{name}:", result.stdout), (script, name)
