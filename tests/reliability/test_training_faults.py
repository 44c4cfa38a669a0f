"""Training under SIGKILL in a checkpoint write, a full disk, a second trainer, a NaN batch.

The killed or stopped processes are train.py itself, driven by ``M2CNN_FAULTS``
(``m2cnn_tf.faults``) to the n-th checkpoint save; re-runs and the in-process faults (a full
disk, a NaN batch) use ``training.train_and_evaluate``, the whole of train.py.
"""

import json
import os
import signal
import subprocess

import numpy as np
import pytest
import tensorflow as tf

from m2cnn_tf.util import faults, locking
from m2cnn_tf.data import input_pipeline
from m2cnn_tf.grading import agreement, metrics
from m2cnn_tf.train import checkpoints, summaries, loop as training

from .conftest import ENV, tiny_config, train_command
from .process import stopped_or_exited

TIMEOUT = 900
# Keras' own weight saving trips numpy 2's __array__(copy=...) deprecation; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture
def no_faults():
    yield
    faults.configure("")


def recorded_checkpoints(folder):
    state = tf.train.get_checkpoint_state(folder)
    return list(state.all_model_checkpoint_paths) if state else []


def assert_readable(prefix):
    """Every tensor of a checkpoint reads back (a cut or corrupt file fails here)."""
    reader = tf.train.load_checkpoint(prefix)
    for name in reader.get_variable_to_shape_map():
        value = reader.get_tensor(name)
        if isinstance(value, np.ndarray) and value.dtype.kind == "f":
            assert np.all(np.isfinite(value)), (prefix, name)


_shared = {}  # results one test reuses from another, to train less


def ckpt_files(folder, step):
    return sorted(p for p in os.listdir(folder) if p.startswith(f"ckpt-{step}.")
                  or p.startswith(f"ckpt-{step}_temp"))


def test_second_trainer_refused_then_sigkill_in_a_checkpoint_write_and_resume(
        data_dir, tmp_path, capsys, reliability):
    """train.py stops itself after recording ckpt-1 (holding the lock): a second training is
    refused. Let go, it is killed while writing ckpt-3, its files cut at a seeded byte count.
    The same command again clears the stale lock, drops the cut files, resumes from ckpt-2."""
    model_dir = tmp_path / "run"
    cfg = tiny_config(data_dir, model_dir, train_steps=4, checkpoint_every_steps=1)
    cut = int(np.random.default_rng(5).integers(1, 20_000))
    rule = f"checkpoint.saved:2:stop;checkpoint.written:4:truncate-kill:{cut}"
    stderr = open(tmp_path / "holder.stderr", "w+")  # a file: a full pipe would block it
    holder = subprocess.Popen(train_command(cfg), stdout=subprocess.DEVNULL, stderr=stderr,
                              env=dict(ENV, **{faults.ENV: rule}))
    try:
        state = stopped_or_exited(holder, TIMEOUT)
        assert state == "stopped", (tmp_path / "holder.stderr").read_text()[-3000:]
        with pytest.raises(locking.LockedError, match=f"locked by pid {holder.pid} ") as info:
            training.train_and_evaluate(cfg, quiet=True)
        reliability("lock.two_trainings", f"LockedError: {info.value}",
                    lost="no (the holder's run untouched)")
        os.kill(holder.pid, signal.SIGCONT)
        holder.wait(timeout=TIMEOUT)
        assert holder.returncode == -signal.SIGKILL, (
            (tmp_path / "holder.stderr").read_text()[-3000:])
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        stderr.close()
    assert checkpoints.checkpoint_step(checkpoints.latest_checkpoint(str(model_dir))) == 2
    cut_files = ckpt_files(model_dir, 3)
    assert cut_files, "the killed write left nothing to clean up"
    assert (model_dir / checkpoints.LOCK).exists()

    capsys.readouterr()
    result = training.train_and_evaluate(cfg)
    log = capsys.readouterr().err
    assert f"cleared a stale lock left by pid {holder.pid}" in log, log[-3000:]
    assert "resuming from step 2 " in log and "removed" in log and "ckpt-3" in log, log[-3000:]
    assert result["resumed"] and result["start_step"] == 2 and result["step"] == 4
    paths = recorded_checkpoints(str(model_dir))
    assert [checkpoints.checkpoint_step(p) for p in paths] == [0, 1, 2, 3, 4][-len(paths):]
    for path in paths + recorded_checkpoints(str(model_dir / checkpoints.BEST_DIR)):
        assert_readable(path)
    assert not list(model_dir.glob("*_temp*"))
    reliability("interrupt.train.sigkill_in_checkpoint",
                f"killed with ckpt-3 cut to {cut} bytes ({', '.join(cut_files)}); re-run: "
                f"'removed …ckpt-3…', 'resuming from step 2', finished at step 4; "
                f"{len(paths)} recorded checkpoints all read back",
                lost="step 3 (its checkpoint was incomplete), trained again")
    reliability("lock.train_stale_after_sigkill",
                f"'note: cleared a stale lock left by pid {holder.pid}', then resumed",
                lost="no")
    # every evaluation in the suite meets a one-grade validation split (data_dir)
    _shared["one_grade_evaluation"] = result["last_eval"]


def test_sigkill_while_writing_the_first_checkpoint(data_dir, tmp_path, reliability):
    observed = []
    for seed in (0, 1):
        model_dir = tmp_path / f"seed{seed}"
        cfg = tiny_config(data_dir, model_dir, train_steps=0)
        if seed == 0:
            rule, how = "checkpoint.written:1:kill", "whole files, not recorded"
        else:
            cut = int(np.random.default_rng(seed).integers(1, 5_000))
            rule, how = f"checkpoint.written:1:truncate-kill:{cut}", f"files cut to {cut} bytes"
        run = subprocess.run(train_command(cfg), capture_output=True, text=True,
                             env=dict(ENV, **{faults.ENV: rule}), timeout=TIMEOUT)
        assert run.returncode == -signal.SIGKILL, run.stderr[-3000:]
        assert checkpoints.latest_checkpoint(str(model_dir)) is None
        assert ckpt_files(model_dir, 0)

        result = training.train_and_evaluate(cfg, quiet=True)
        assert not result["resumed"] and result["step"] == 0
        paths = recorded_checkpoints(str(model_dir))
        assert [checkpoints.checkpoint_step(p) for p in paths] == [0]
        assert_readable(paths[0])
        observed.append(f"seed {seed} ({how}): the re-run started afresh and wrote a readable "
                        "ckpt-0")
    reliability("interrupt.train.sigkill_first_checkpoint", "; ".join(observed),
                lost="no (nothing had been trained yet)")


def test_a_full_disk_while_checkpointing(data_dir, tmp_path, reliability, no_faults):
    model_dir = tmp_path / "run"
    cfg = tiny_config(data_dir, model_dir, train_steps=3, checkpoint_every_steps=1)
    faults.configure("checkpoint.written:3:enospc")  # saves: ckpt-0, ckpt-1, ckpt-2
    with pytest.raises(training.TrainingError) as info:
        training.train_and_evaluate(cfg, quiet=True)
    message = str(info.value)
    assert f"writing checkpoint {model_dir / 'ckpt-2'} failed: No space left on device" in message
    assert f"the last complete checkpoint {model_dir / 'ckpt-1'} is intact" in message, message
    assert checkpoints.checkpoint_step(checkpoints.latest_checkpoint(str(model_dir))) == 1
    assert not ckpt_files(model_dir, 2), "the failed checkpoint's files were left behind"
    for path in recorded_checkpoints(str(model_dir)):
        assert_readable(path)
    assert not (model_dir / checkpoints.LOCK).exists()
    message = message.replace(str(model_dir), "<run>")
    reliability("interrupt.train.enospc", f"TrainingError: {message}; ckpt-0 and ckpt-1 read "
                "back", lost="step 2 (not checkpointed)")


def _poison(k):
    """make_dataset whose training stream carries one NaN pixel in its k-th batch."""
    original = input_pipeline.make_dataset

    def make_dataset(*args, training=False, **kwargs):
        dataset = original(*args, training=training, **kwargs)
        if not training:
            return dataset

        def poison(index, batch):
            image = tf.cast(batch["image"], tf.float32)
            bad = tf.tensor_scatter_nd_update(image, [[0, 0, 0, 0]], [float("nan")])
            return {**batch, "image": tf.where(tf.equal(index, k - 1), bad, image)}

        return dataset.enumerate().map(poison)

    return make_dataset


def test_a_nan_batch_stops_training_naming_the_step(data_dir, tmp_path, monkeypatch,
                                                   reliability):
    observed = []
    for k in (3, 1):
        model_dir = tmp_path / f"nan_at_{k}"
        cfg = tiny_config(data_dir, model_dir, train_steps=4, checkpoint_every_steps=1,
                          eval_every_steps=2)
        monkeypatch.setattr(input_pipeline, "make_dataset", _poison(k))
        with pytest.raises(training.NonFiniteLossError,
                           match=rf"the loss is nan at step {k} .*last good checkpoint "
                                 rf".*ckpt-{k - 1} \(step {k - 1}\)") as info:
            training.train_and_evaluate(cfg, quiet=True)
        monkeypatch.undo()
        latest = checkpoints.latest_checkpoint(str(model_dir))
        assert checkpoints.checkpoint_step(latest) == k - 1
        before = {p: open(p, "rb").read() for p in map(str, model_dir.glob(f"ckpt-{k - 1}.*"))}
        for path in recorded_checkpoints(str(model_dir)):
            assert_readable(path)
        model, info_ = checkpoints.load_trained_model(str(model_dir), "latest")
        assert all(np.all(np.isfinite(w.numpy())) for w in model.weights)
        assert {p: open(p, "rb").read() for p in before} == before
        assert summaries.read_metrics(str(model_dir))[-1]["kind"] == "error"
        assert not (model_dir / checkpoints.LOCK).exists()
        observed.append(f"k={k}: {str(info.value).split(';')[0]}; ckpt-{k - 1} finite, "
                        "restorable")
    reliability("numerics.nan_batch", "; ".join(observed),
                lost="the poisoned step only (nothing saved after the last good checkpoint)")

    # the k=3 run evaluated at step 2 and wrote best/ckpt-2: a kill between that save and
    # best/best.json would leave the previous best's record (here made by hand: step 0)
    model_dir = tmp_path / "nan_at_3"
    best_json = model_dir / checkpoints.BEST_DIR / checkpoints.BEST_JSON
    good = json.loads(best_json.read_text())
    assert good["step"] == 2
    best_json.write_text(json.dumps({"step": 0, "checkpoint": "ckpt-0",
                                     "metrics": {"kappa_score": 0.99}}))
    record = checkpoints.read_best_record(str(model_dir), repair=True)
    assert record["step"] == 2 and record["metrics"] == good["metrics"]
    assert json.loads(best_json.read_text())["step"] == 2
    _, info_ = checkpoints.load_trained_model(str(model_dir), "best")
    assert info_["step"] == 2 and info_["validation"] == good["metrics"]
    reliability("interrupt.train.best_json_stale", "best/best.json said step 0 (kappa 0.99) "
                "beside best/ckpt-2: rebuilt from metrics.jsonl's step-2 evaluation and "
                "rewritten; load_trained_model reports step 2's metrics",
                lost="no (before the fix the stale kappa 0.99 would have blocked every later "
                     "best)")


def test_kappa_of_a_one_grade_validation_split(data_dir, tmp_path, reliability):
    # by hand: every true grade 2, predictions spread, or all 2 (0/0)
    spread = np.zeros((5, 5), np.int64)
    spread[2] = [1, 0, 2, 1, 0]
    constant = np.zeros((5, 5), np.int64)
    constant[2, 2] = 4
    with np.errstate(all="raise"):  # any division by zero would raise here
        assert agreement.kappa_from_counts(spread) == 0.0  # defined: 1 − 1
        assert agreement.kappa_from_counts(constant, agreement.KAPPA_WHEN_UNDEFINED) == 0.0
        summary = metrics.summarize({**metrics.zero_statistics(), "confusion_score": spread,
                                     "confusion_argmax": constant, "count": np.int64(4),
                                     "squared_error_sum": np.float64(3.0),
                                     "cross_entropy_sum": np.float64(2.0)})
    assert summary["kappa_score"] == 0.0 and summary["kappa_argmax"] == 0.0
    assert "one true grade" in agreement.kappa_from_counts.__doc__
    # and a real evaluation of the suite's one-grade validation split (grade 2 only)
    evaluation = _shared.get("one_grade_evaluation")
    if evaluation is None:
        evaluation = training.train_and_evaluate(
            tiny_config(data_dir, tmp_path / "run", train_steps=1), quiet=True)["last_eval"]
    confusion = np.asarray(evaluation["confusion_score"])
    assert confusion.sum() == confusion[2].sum() == evaluation["count"] > 0
    assert evaluation["kappa_score"] == 0.0 and np.isfinite(evaluation["mse"])
    reliability("numerics.one_grade_validation",
                f"kappa 0.0 by hand (spread and constant predictions) and in a real evaluation "
                f"of {evaluation['count']} grade-2 images (score kappa "
                f"{evaluation['kappa_score']}, argmax {evaluation['kappa_argmax']}, MSE "
                f"{evaluation['mse']:.3f}); documented in agreement.kappa_from_counts")


def _whole_lines(model_dir):
    """metrics.jsonl as written: every line a complete JSON record, the file ending in one
    (no file: no line yet)."""
    path = model_dir / summaries.METRICS_JSONL
    text = path.read_text() if path.exists() else ""
    assert not text or text.endswith("\n"), "metrics.jsonl ends in a cut line"
    return [json.loads(line) for line in text.splitlines()]


def test_a_full_disk_while_writing_the_training_logs(data_dir, tmp_path, reliability, no_faults):
    """ENOSPC appending to metrics.jsonl (its 2nd line) and writing TensorBoard scalars (the 1st
    write): a TrainingError names the file and the intact checkpoint, metrics.jsonl keeps only
    whole lines, and the same command resumes to the end."""
    observed = {}
    for name, rule, what in (("metrics", "report.jsonl:2:enospc", summaries.METRICS_JSONL),
                             ("tensorboard", "report.tensorboard:1:enospc", "TensorBoard logs")):
        model_dir = tmp_path / name
        cfg = tiny_config(data_dir, model_dir, train_steps=3, checkpoint_every_steps=1)
        faults.configure(rule)
        with pytest.raises(training.TrainingError) as info:
            training.train_and_evaluate(cfg, quiet=True)
        faults.configure("")
        message = str(info.value)
        assert what in message and "No space left on device" in message, message
        latest = checkpoints.latest_checkpoint(str(model_dir))
        assert latest and f"the last complete checkpoint {latest} is intact" in message, message
        lines_before = _whole_lines(model_dir)
        assert len(lines_before) == (1 if name == "metrics" else 0), lines_before
        result = training.train_and_evaluate(cfg, quiet=True)
        assert result["resumed"] and result["step"] == 3
        assert _whole_lines(model_dir)[-1]["kind"] == "final"
        assert summaries.read_metrics(str(model_dir), "final")
        assert not (model_dir / checkpoints.LOCK).exists()
        observed[name] = (message.replace(str(model_dir), "<run>"),
                          checkpoints.checkpoint_step(latest), len(lines_before))
    text, step, kept = observed["metrics"]
    reliability("interrupt.train.enospc_metrics",
                f"TrainingError: {text}; metrics.jsonl kept its {kept} whole line(s); the same "
                f"command resumed from step {step} and finished at step 3",
                lost=f"training after step {step} (not checkpointed), trained again")
    text, step, kept = observed["tensorboard"]
    reliability("interrupt.train.enospc_tensorboard",
                f"TrainingError: {text}; the same command resumed from step {step} and finished "
                "at step 3", lost=f"training after step {step}, trained again")


def test_sigkill_with_a_metrics_line_half_written(data_dir, tmp_path, reliability):
    """train.py killed right after its first metrics.jsonl line, the file cut inside that line
    (seeded byte counts): read_metrics skips the cut line, and the same command drops it and
    appends whole lines after it."""
    observed = []
    for seed in (0, 1):
        model_dir = tmp_path / f"seed{seed}"
        cfg = tiny_config(data_dir, model_dir, train_steps=2, checkpoint_every_steps=1)
        cut = int(np.random.default_rng(seed).integers(1, 40))
        run = subprocess.run(train_command(cfg), capture_output=True, text=True,
                             env=dict(ENV, **{faults.ENV: f"report.jsonl:1:truncate-kill:{cut}"}),
                             timeout=TIMEOUT)
        assert run.returncode == -signal.SIGKILL, run.stderr[-3000:]
        assert (model_dir / summaries.METRICS_JSONL).stat().st_size == cut
        assert summaries.read_metrics(str(model_dir)) == []  # the cut line is not a record
        result = training.train_and_evaluate(cfg, quiet=True)
        assert result["step"] == 2
        records = _whole_lines(model_dir)
        assert records[-1]["kind"] == "final", records
        observed.append(f"seed {seed}: cut at byte {cut}, re-run wrote {len(records)} whole "
                        "lines after dropping it")
    reliability("interrupt.train.sigkill_mid_metrics_line", "; ".join(observed),
                lost="the cut line (one training window's numbers)")
