"""The reliability suite's shared pieces: the case recorder, the report hook, shared fixtures.

Each test records what it observed for its case ids through the ``reliability`` fixture. At the
end of the session, when ``--reliability-report=PATH`` (or ``M2CNN_RELIABILITY_REPORT=PATH``) is
given, the table of every case — expected, observed, data lost, pass/fail — is written to PATH:

    python -m pytest tests/reliability --reliability-report=RELIABILITY.md
"""

import csv
import dataclasses
import os
import pathlib
import re
import shutil
import sys
import time

import pytest

from .cases import CASES


def built_grades(out, manifest, resolution=224):
    """{image id: grade} of every record a build wrote at ``resolution``."""
    import tensorflow as tf

    from m2cnn_tf.data import records

    built = {}
    for entry in manifest["splits"].values():
        for shard in entry["resolutions"][str(resolution)]["shards"]:
            for raw in tf.data.TFRecordDataset(str(out / shard)):
                example = records.parse_example_numpy(raw.numpy())
                built[example[records.IMAGE_ID].decode()] = example[records.GRADE]
    return built


def error_rows(out):
    """The (file, reason) rows of a build's errors.csv (file names may not be UTF-8)."""
    from m2cnn_tf.data import builder

    with open(out / builder.ERRORS, newline="", encoding="utf-8",
              errors="surrogateescape") as f:
        return [(row["file"], row["reason"]) for row in csv.DictReader(f)]

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
ENV.pop("M2CNN_FAULTS", None)
REPORT_ENV = "M2CNN_RELIABILITY_REPORT"
SYNTHETIC_WIDTH = 320

_TMP = re.compile(r"/(?:[\w.-]+/)*pytest-of-[^/]+/pytest-\d+/")  # this run's temporary folders
_records = {}  # case id → dict
_outcomes = {}  # test nodeid → "passed" / "failed"
_started = time.time()


def pytest_addoption(parser):
    parser.addoption("--reliability-report", default=None, metavar="PATH",
                     help="write the reliability table (RELIABILITY.md) to PATH at the end")


class Recorder:
    def __init__(self, nodeid):
        self.nodeid = nodeid

    def __call__(self, case_id, observed, lost="no"):
        """Records what happened for one case (``lost``: what data was lost, or "no")."""
        assert case_id in CASES, f"{case_id} is not in tests/reliability/cases.py"
        observed = _TMP.sub("<tmp>/", " ".join(str(observed).split()))
        _records[case_id] = {"observed": observed, "lost": lost,
                             "nodeid": self.nodeid}


@pytest.fixture
def reliability(request):
    return Recorder(request.node.nodeid)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        _outcomes[item.nodeid] = "FAILED"
    elif report.when == "call" and item.nodeid not in _outcomes:
        _outcomes[item.nodeid] = "passed"


def _cell(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_report(records, outcomes, seconds):
    lines = [
        "# Reliability under faults and hostile input",
        "",
        "Generated from the test run by `python -m pytest tests/reliability "
        "--reliability-report=RELIABILITY.md`; do not edit by hand (`tests/reliability/"
        "test_report.py` fails when this table and the suite's cases differ). Each row is one "
        "fault tried, what the system did, and whether any data was lost. Interruption points "
        "are chosen by counts (the k-th record, shard, write or checkpoint) through the "
        "`M2CNN_FAULTS` hooks of `m2cnn_tf/util/faults.py`, never by timing.",
        "",
        f"{len(records)} cases; suite wall time {seconds:.0f} s on this machine (2 cores, "
        f"load average {os.getloadavg()[0]:.1f} at the end: a shared machine is slower).",
        "",
        "| case | component | fault | expected | observed | data lost | result |",
        "|---|---|---|---|---|---|---|",
    ]
    for case_id, (component, fault, expected) in CASES.items():
        record = records.get(case_id)
        if record is None:
            observed, lost, result = "(not run)", "?", "NOT RUN"
        else:
            observed, lost = record["observed"], record["lost"]
            result = outcomes.get(record["nodeid"], "NOT RUN")
            result = "pass" if result == "passed" else result
        lines.append("| " + " | ".join(_cell(c) for c in (
            f"`{case_id}`", component, fault, expected, observed, lost, result)) + " |")
    return "\n".join(lines) + "\n"


def pytest_sessionfinish(session, exitstatus):
    path = session.config.getoption("reliability_report", default=None) or os.environ.get(
        REPORT_ENV)
    if not path or not _records:
        return
    text = render_report(_records, _outcomes, time.time() - _started)
    tmp = f"{path}.incomplete"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    missing = sorted(set(CASES) - set(_records))
    message = f"reliability report: {len(_records)} of {len(CASES)} cases written to {path}"
    if missing:
        message += f"; NOT RUN: {', '.join(missing)}"
    print("\n" + message, file=sys.stderr)


# --------------------------------------------------------------------------------------------
# Shared data and models (built once per session: they are the expensive part)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """12 synthetic photographs at 224 px; the validation split is patients 0–1, all grade 2
    (a one-grade validation split, on purpose: every evaluation in the suite meets it)."""
    from m2cnn_tf.data import builder, sources
    from m2cnn_tf.config import BuilderConfig

    out = tmp_path_factory.mktemp("reliability_data") / "synthetic"
    inputs, skipped = sources.synthetic_inputs(12, seed=0, width=SYNTHETIC_WIDTH)
    inputs = [dataclasses.replace(r, split="validation", grade=2) if int(r.patient_id) < 2
              else dataclasses.replace(r, split="train") for r in inputs]
    builder.build(inputs, skipped, str(out),
                  BuilderConfig(resolutions=(224,), examples_per_shard=4, num_workers=1),
                  {"kind": "synthetic"}, quiet=True)
    return str(out)


def tiny_config(data, model_dir, **overrides):
    """The real TrainConfig shrunk: tiny variant at 224, batch 2, no augmentation."""
    from m2cnn_tf import config

    settings = dict(variant="tiny", resolution=224, init="none", data_dir=data,
                    model_dir=str(model_dir), batch_size=2, train_steps=1, eval_every_steps=1000,
                    checkpoint_every_steps=1000, log_every_steps=1, augment=False,
                    keep_checkpoints=2)  # a tiny run's checkpoint is still ~100 MB
    settings.update(overrides)
    return dataclasses.replace(config.TRAIN, **settings)


def train_command(cfg):
    return [sys.executable, str(REPO_ROOT / "train.py"),
            f"--resolution={cfg.resolution}", f"--init={cfg.init}", f"--data_dir={cfg.data_dir}",
            f"--model_dir={cfg.model_dir}", f"--variant={cfg.variant}",
            f"--batch_size={cfg.batch_size}", f"--train_steps={cfg.train_steps}",
            f"--eval_every_steps={cfg.eval_every_steps}",
            f"--checkpoint_every_steps={cfg.checkpoint_every_steps}",
            f"--log_every_steps={cfg.log_every_steps}",
            f"--keep_checkpoints={cfg.keep_checkpoints}", "--noaugment", "--quiet"]


@pytest.fixture(scope="session")
def exported(data_dir, tmp_path_factory):
    """An untrained tiny run (ckpt-0 only) and its SavedModel export: the graph, not the
    weights, decides how hostile files are handled."""
    from m2cnn_tf.train import loop as training
    from m2cnn_tf.serving import export

    root = tmp_path_factory.mktemp("reliability_model")
    model_dir = str(root / "run")
    training.train_and_evaluate(tiny_config(data_dir, model_dir, train_steps=0), quiet=True)
    version = export.export_saved_model(model_dir, str(root / "export"), checkpoint="latest")
    yield {"model_dir": model_dir, "export_dir": str(root / "export"), "version": version}
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(autouse=True)
def _free_disk(request):
    """Deletes a passed test's tmp_path: checkpoints make each training test's folder
    hundreds of MB, and pytest keeps the last three runs' folders."""
    path = request.getfixturevalue("tmp_path") if "tmp_path" in request.fixturenames else None
    yield
    if path is not None and _outcomes.get(request.node.nodeid) == "passed":
        shutil.rmtree(path, ignore_errors=True)
