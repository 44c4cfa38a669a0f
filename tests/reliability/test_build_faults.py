"""The TFRecord build under SIGKILL, a full disk and a second builder.

Interruption points are counts, not moments: ``M2CNN_FAULTS`` (``m2cnn_tf.faults``) kills the
build_tfrecords.py process after its k-th record or shard, with k drawn from fixed seeds, or
stops it (SIGSTOP) there so that a second builder meets it holding the lock. Each killed
process is the real command line; the re-runs are the same build in this process (the same
inputs, settings and source description as the command line's), which must end byte-identical
to an uninterrupted build.
"""

import csv
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from m2cnn_tf.util import faults, locking
from m2cnn_tf.data import builder, sources
from m2cnn_tf.config import BuilderConfig

from .conftest import ENV, REPO_ROOT, SYNTHETIC_WIDTH
from .process import stopped_or_exited

NUM_IMAGES = 12
EXAMPLES_PER_SHARD = 3
ARGS = ["--source=synthetic", f"--num_images={NUM_IMAGES}",
        f"--synthetic_width={SYNTHETIC_WIDTH}", "--resolutions=224",
        f"--examples_per_shard={EXAMPLES_PER_SHARD}", "--num_workers=1", "--quiet"]
TIMEOUT = 600


def build_in_process(output_dir):
    """What ``build_tfrecords.py`` + ARGS does, run here (no interpreter start-up)."""
    inputs, skipped = sources.synthetic_inputs(NUM_IMAGES, seed=0, width=SYNTHETIC_WIDTH)
    info = {"kind": "synthetic", "num_images": NUM_IMAGES, "synthetic_width": SYNTHETIC_WIDTH}
    return builder.build(inputs, skipped, str(output_dir),
                         BuilderConfig(resolutions=(224,),
                                       examples_per_shard=EXAMPLES_PER_SHARD,
                                       num_workers=1),
                         info, quiet=True)


def files_of(folder):
    """Every file of a build but its private state folder: {relative path: bytes}."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and builder.STATE_DIR not in p.parts}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "build"
    build_in_process(out)
    state = out / builder.STATE_DIR
    plan = json.loads((state / builder.PLAN).read_text())
    sizes = [json.loads((state / f"{name}.json").read_text())["count"] for name in plan["shards"]]
    return {"files": files_of(out), "shards": len(sizes), "sizes": sizes}


def distinct_counts(seed, low, high, count):
    """``count`` different interruption points in [low, high), drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    return [int(k) for k in rng.choice(np.arange(low, high), size=count, replace=False)]


@pytest.fixture
def no_faults():
    yield
    faults.configure("")


def _killed_build(output_dir, rule):
    process = subprocess.run([sys.executable, str(REPO_ROOT / "build_tfrecords.py"), *ARGS,
                              f"--output_dir={output_dir}"], capture_output=True, text=True,
                             env=dict(ENV, **{faults.ENV: rule}), timeout=TIMEOUT)
    assert process.returncode == -signal.SIGKILL, (rule, process.returncode,
                                                   process.stderr[-2000:])


@pytest.mark.parametrize("point,seed,count", [("record", 0, 3), ("shard", 1, 2)])
def test_sigkill_at_a_counted_point_then_rerun_is_identical(reference, tmp_path, capsys,
                                                            reliability, point, seed, count):
    observed = []
    limit = NUM_IMAGES if point == "record" else reference["shards"]
    for k in distinct_counts(seed, 1, limit, count):  # 1 … last − 1
        out = tmp_path / f"k{k}"
        _killed_build(out, f"build.{point}:{k}:kill")
        assert not (out / builder.MANIFEST).exists()
        completed = len(list((out / builder.STATE_DIR).glob("*-of-*.json")))
        # killed after record k: the shards that ended before it were committed
        ends = np.cumsum(reference["sizes"])
        assert completed == (int(np.sum(ends < k)) if point == "record" else k)
        leftovers = list(out.rglob("*" + builder.TMP_SUFFIX))
        build_in_process(out)
        stderr = capsys.readouterr().err
        assert "stale lock" in stderr
        assert files_of(out) == reference["files"], f"k={k}"
        assert not list(out.rglob("*" + builder.TMP_SUFFIX))
        observed.append(f"k={k}: {completed} shards kept, {len(leftovers)} partial file(s) "
                        "removed, output identical")
    reliability(f"interrupt.build.sigkill_{point}s", "; ".join(observed),
                lost="no (the killed run's partial shard is redone)")


def _build_with_dying_workers(output_dir, rule):
    args = [a if a != "--num_workers=1" else "--num_workers=2" for a in ARGS]
    return subprocess.run([sys.executable, str(REPO_ROOT / "build_tfrecords.py"), *args,
                           f"--output_dir={output_dir}"], capture_output=True, text=True,
                          env=dict(ENV, **{faults.ENV: rule}), timeout=TIMEOUT)


def test_a_dying_build_worker_neither_hangs_nor_changes_the_build(reference, tmp_path,
                                                                 reliability):
    observed = []
    for k in distinct_counts(3, 2, 5, 2):
        out = tmp_path / f"k{k}"
        process = _build_with_dying_workers(out, f"build.decode:{k}:kill")
        assert process.returncode == 0, process.stderr[-3000:]
        assert files_of(out) == reference["files"], f"k={k}"
        observed.append(f"k={k}: build finished, output identical")
    reliability("interrupt.build.worker_dies", "; ".join(observed), lost="no")


def test_a_photograph_that_kills_every_worker_is_reported_not_hung(tmp_path, reliability):
    out = tmp_path / "out"
    process = _build_with_dying_workers(out, "build.decode:1:kill")
    assert process.returncode != 0
    assert "max_error_fraction" in process.stderr, process.stderr[-3000:]
    with open(out / builder.ERRORS, newline="") as f:
        reasons = [row["reason"] for row in csv.DictReader(f)]
    assert len(reasons) == NUM_IMAGES and set(reasons) == {builder.WORKER_DIED}, reasons
    assert not list(out.rglob("*" + builder.TMP_SUFFIX))
    reliability("interrupt.build.worker_dies_always",
                f"exit {process.returncode}; errors.csv: {len(reasons)} rows '{reasons[0]}'; "
                f"stderr ends: {process.stderr.strip().splitlines()[-1]}",
                lost="no (nothing was written)")


def test_a_full_disk_fails_clearly_and_keeps_finished_shards(reference, tmp_path, reliability,
                                                             no_faults):
    observed = []
    for n in distinct_counts(2, 1, NUM_IMAGES + 4, 3):
        out = tmp_path / f"n{n}"
        faults.configure(f"build.write:{n}:enospc")
        with pytest.raises(builder.BuildError) as info:
            build_in_process(out)
        message = str(info.value)
        assert "No space left on device" in message and "ENOSPC" in message, message
        assert str(out) in message and "run the same command again" in message, message
        assert not list(out.rglob("*" + builder.TMP_SUFFIX)), "partial files left behind"
        assert not (out / builder.STATE_DIR / builder.LOCK).exists(), "lock not released"
        kept = files_of(out)
        # whatever is there is finished and final (at a small n, nothing yet)
        assert all(reference["files"][name] == data for name, data in kept.items())
        faults.configure("")
        build_in_process(out)
        assert files_of(out) == reference["files"]
        observed.append(f"write {n}: {len(kept)} finished file(s) kept intact")
    reliability("interrupt.build.enospc", f"BuildError: {message.replace(str(out), '<out>')}"
                f" — {'; '.join(observed)}; each re-run finished identically",
                lost="no (completed shards kept; the failed shard's partial file deleted)")


def test_a_second_builder_is_refused_and_a_killed_holder_is_cleared(reference, tmp_path,
                                                                     reliability):
    out = tmp_path / "build"
    stderr = open(tmp_path / "holder.stderr", "w+")  # a file: a full pipe would block it
    holder = subprocess.Popen([sys.executable, str(REPO_ROOT / "build_tfrecords.py"), *ARGS,
                               f"--output_dir={out}"], stdout=subprocess.DEVNULL, stderr=stderr,
                              env=dict(ENV, **{faults.ENV: "build.record:2:stop"}))
    try:
        assert stopped_or_exited(holder, TIMEOUT) == "stopped", (
            (tmp_path / "holder.stderr").read_text()[-2000:])
        with pytest.raises(locking.LockedError, match=f"locked by pid {holder.pid} on "
                                                      f"{os.uname().nodename}") as info:
            build_in_process(out)
        reliability("lock.two_builders", f"LockedError: {info.value}",
                    lost="no (the holder's folder untouched)")
    finally:
        holder.kill()
        holder.wait(timeout=TIMEOUT)
        stderr.close()
    assert (out / builder.STATE_DIR / builder.LOCK).exists()  # left behind by the SIGKILL
    # the same command again, as a user would run it (this also shows that the command line
    # and build_in_process, used for the other re-runs, write the same bytes)
    rerun = subprocess.run([sys.executable, str(REPO_ROOT / "build_tfrecords.py"), *ARGS,
                            f"--output_dir={out}"], capture_output=True, text=True, env=ENV,
                           timeout=TIMEOUT)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    note = f"cleared a stale lock left by pid {holder.pid}"
    assert note in rerun.stderr, rerun.stderr[-3000:]
    assert files_of(out) == reference["files"]
    reliability("lock.build_stale_after_sigkill", f"'note: {note}'; the build finished "
                "byte-identical to an uninterrupted one", lost="no")
