"""Shared fixtures: where the real photographs live, and skipping only when they are absent."""

import csv
import dataclasses
import os
import pathlib

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = pathlib.Path(os.environ.get("M2CNN_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
EYEPACS_1024 = SHARED_DATA / "eyepacs_1024"
EYEPACS_FULLRES = SHARED_DATA / "eyepacs_fullres"


def _require(folder: pathlib.Path) -> pathlib.Path:
    if not folder.is_dir():
        pytest.skip(f"real photographs not available: {folder} is absent")
    return folder


def read_labels(folder: pathlib.Path) -> dict:
    with open(folder / "trainLabels.csv", newline="") as f:
        return {row["image"]: int(row["level"]) for row in csv.DictReader(f)}


def tiny_train_config(data, model_dir, **overrides):
    """The real TrainConfig, shrunk: tiny variant, batch 2, one step, evaluation at the end."""
    from m2cnn_tf import config

    settings = dict(variant="tiny", data_dir=data, model_dir=str(model_dir), batch_size=2,
                    train_steps=1, eval_every_steps=1000, checkpoint_every_steps=1000,
                    log_every_steps=1)
    settings.update(overrides)
    return dataclasses.replace(config.TRAIN, **settings)


@pytest.fixture(scope="session")
def eyepacs_1024() -> pathlib.Path:
    return _require(EYEPACS_1024)


@pytest.fixture(scope="session")
def eyepacs_fullres() -> pathlib.Path:
    return _require(EYEPACS_FULLRES)


# The tiny variant trained on synthetic photographs as demo.py trains it, shrunk to fit CI:
# photographs 640 px wide (the lesion detail survives at 224) and 60 steps of 8 (120 until
# 2026-11-30: Grad-CAM's trained ÷ untrained ratio measured no higher there, see test_explain).
# Deterministic (TensorFlow op determinism, fixed data order): the same network on every run on
# one machine, so a test that reads it passes or fails the same way each time. It costs no
# measurable time here (seed 0, 120 steps: 228–247 s deterministic, 216–265 s not, two runs side
# by side).
SYNTHETIC_RUN = {"num_images": 200, "width": 640, "resolution": 224, "variant": "tiny",
                 "batch_size": 8, "train_steps": 60, "seed": 0, "deterministic": True}


@pytest.fixture(scope="session")
def synthetic_trained_run(tmp_path_factory) -> dict:
    """A training run on synthetic photographs: {data_dir, model_dir, resolution, …}.

    Built once per session and shared: the settings are ``SYNTHETIC_RUN`` (also returned).
    The photographs' seeds are 0 … num_images − 1 (``sources.synthetic_inputs``), so tests that
    draw photographs of their own should use others. The training runs as ``python train.py``
    in a process of its own: --deterministic must be set before TensorFlow starts.
    """
    import subprocess
    import sys

    from m2cnn_tf.config import BuilderConfig
    from m2cnn_tf.data import builder, sources

    s = SYNTHETIC_RUN
    root = tmp_path_factory.mktemp("synthetic_run")
    inputs, skipped = sources.synthetic_inputs(s["num_images"], s["seed"], s["width"])
    data_dir = str(root / "data")
    builder.build(inputs, skipped, data_dir, BuilderConfig(
        resolutions=(s["resolution"],), seed=s["seed"], val_fraction=0.2),
        {"kind": "synthetic", "num_images": s["num_images"], "synthetic_width": s["width"]},
        quiet=True)
    model_dir = str(root / "run")
    steps = s["train_steps"]
    flags = {"resolution": s["resolution"], "variant": s["variant"], "init": "none",
             "data_dir": data_dir, "model_dir": model_dir, "batch_size": s["batch_size"],
             "train_steps": steps, "eval_every_steps": steps, "checkpoint_every_steps": steps,
             "seed": s["seed"]}
    argv = [sys.executable, str(REPO_ROOT / "train.py"), "--quiet",
            "--deterministic" if s["deterministic"] else "--nodeterministic",
            *(f"--{k}={v}" for k, v in flags.items())]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=1200, check=False,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert result.returncode == 0, result.stderr[-3000:]
    return {**s, "data_dir": data_dir, "model_dir": model_dir}


# Test files that take minutes, started first: the sum of their tests' times among the 100
# slowest of a quiet fresh-clone CI run (`--durations=100`, cc07240, this 2-core machine,
# 2026-11-30), in seconds. pytest-xdist (--dist loadfile) hands files to its workers in order and
# by default puts the files with the most tests first, which left the two longest files, each a
# single test, to the end: one worker ran them alone while the other idled. Started first, the
# short files fill in around them.
LONG_FILES = (
    "test_readme_recipe.py",  # 366: the README's EyePACS recipe, 12 commands
    "test_training.py",  # 338: staged init, mirrored, multi-worker, SIGKILL
    "test_explain.py",  # 292: the deterministic synthetic training run (120 steps; 60 since)
    "test_training_faults.py",  # 206: full disk, SIGKILL mid-write, NaN batch
    "test_gpu_memory.py",  # 161: mirrored float16 overflow, host copies, accumulation
    "test_experiments.py",  # 158: Table III killed and rerun, Fig. 4
    "test_notebook.py",  # 114
    "test_readme_stages.py",  # 110
    "test_serving.py",  # 105
    "test_readme.py",  # 98
    "test_training_learning.py",  # 187 at 224 px; at 112 px since 2026-11-30, ≈ 50–90
)


def pytest_configure(config):
    if hasattr(config.option, "loadscopereorder"):  # pytest-xdist: keep our order
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(items):
    rank = {name: n for n, name in enumerate(LONG_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONG_FILES)))  # stable
