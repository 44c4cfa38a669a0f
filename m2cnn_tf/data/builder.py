"""Build normalised TFRecords at several resolutions from a list of photographs.

The build, in order:
1. the source's inputs get patient-level splits; each split is ordered by a seeded shuffle and
   cut into shards of ``examples_per_shard`` inputs (a plan fixed by the inputs and settings);
2. worker processes decode each photograph once, normalise it at every resolution and JPEG-encode
   it; the main process writes the records in plan order;
3. every shard is written under a temporary name and renamed when complete, one file per
   resolution, then a small record of the shard (counts, errors) is saved in ``.build/``;
4. ``errors.csv`` and, last of all, ``manifest.json`` are written.

Re-running the same command after an interruption (even ``kill -9``) skips the shards already
complete and ends with byte-identical output. A build of different inputs or settings into the
same folder is refused rather than mixed in.
"""

from __future__ import annotations

import collections
import concurrent.futures
import concurrent.futures.process
import csv
import dataclasses
import errno
import hashlib
import io
import json
import multiprocessing
import os
import random
import sys
from typing import Dict, Iterable, Iterator, List, Optional, Sequence

from m2cnn_tf import __version__
from m2cnn_tf.util import atomic, faults, locking, progress
from m2cnn_tf.data import build_worker, records, splits
from m2cnn_tf.config import BUILDER, NUM_GRADES, PREPROCESS, BuilderConfig, PreprocessConfig
from m2cnn_tf.data.sources import SPLITS, InputRecord, SkippedInput

MANIFEST = "manifest.json"
ERRORS = "errors.csv"
STATE_DIR = ".build"  # plan, per-shard records and the lock; not part of the dataset
PLAN = "plan.json"
LOCK = "lock"
TMP_SUFFIX = atomic.TMP_SUFFIX


class BuildError(RuntimeError):
    """The build cannot go on; the message says why and what to do."""


@dataclasses.dataclass
class Shard:
    split: str
    index: int
    count: int  # shards in this split
    inputs: List[InputRecord]

    @property
    def name(self) -> str:
        return f"{self.split}-{self.index:05d}-of-{self.count:05d}"

    def path(self, resolution: int) -> str:
        return f"{resolution}/{self.name}.tfrecord"


def plan_shards(inputs: Sequence[InputRecord], examples_per_shard: int, seed: int) -> List[Shard]:
    """Cuts each split, in a seeded shuffled order, into shards of at most N inputs."""
    shards = []
    for split in SPLITS:
        members = sorted((r for r in inputs if r.split == split), key=lambda r: r.image_id)
        if not members:
            continue
        random.Random(f"{seed}:{split}").shuffle(members)
        count = -(-len(members) // examples_per_shard)
        for i in range(count):
            shards.append(Shard(split, i, count,
                                members[i * examples_per_shard : (i + 1) * examples_per_shard]))
    return shards


def inputs_checksum(inputs: Sequence[InputRecord], skipped: Sequence[SkippedInput]) -> str:
    """sha256 of the full list of inputs (ids, grades, splits, locations) and skipped rows."""
    digest = hashlib.sha256()
    for r in sorted(inputs, key=lambda r: r.image_id):
        # Extra labels only where a record has them, so builds without keep their checksum.
        labels = "".join(f"\t{name}={value}" for name, value in r.labels)
        digest.update(f"{r.image_id}\t{r.patient_id}\t{r.eye}\t{r.grade}\t{r.split}\t"
                      f"{r.location}{labels}\n".encode("utf-8", errors="surrogateescape"))
    for s in skipped:
        digest.update(f"skipped\t{s.file}\t{s.reason}\n".encode("utf-8", errors="surrogateescape"))
    return "sha256:" + digest.hexdigest()


def _write_failed(path: str, error: Exception) -> BuildError:
    """A failed write (OSError, or TensorFlow's error from a TFRecord writer) as a BuildError."""
    number = getattr(error, "errno", None)
    reason = getattr(error, "strerror", None) or getattr(error, "message", None) or str(error)
    code = f" (errno {errno.errorcode.get(number, number)})" if number else ""
    return BuildError(
        f"writing {path} failed: {reason}{code}; the shards completed so far are kept — free "
        "space or fix the folder, then run the same command again to finish")


def _atomic_write(path: str, data: bytes) -> None:
    """``atomic.write_bytes`` (a killed or failed write leaves the old file or the new one, never
    half of one) behind the ``build.write`` fault point; an OSError (a full disk) becomes a
    BuildError naming the file."""
    try:
        faults.point("build.write")
        atomic.write_bytes(path, data)
    except OSError as e:
        raise _write_failed(path, e) from None


def _json_bytes(value) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True) + "\n").encode("utf-8")


def _relative_source(location: str, images_root: Optional[str]) -> str:
    """A file's path relative to the images folder (records must not embed this machine's
    layout); synthetic and TFDS locations are kept as they are."""
    if images_root and not location.startswith(("synthetic:", "tfds:")):
        relative = os.path.relpath(os.path.abspath(location), os.path.abspath(images_root))
        if not relative.startswith(".."):
            return relative
    return location


class _ShardWriter:
    """Writes one shard's resolutions under temporary names; ``commit`` renames them."""

    def __init__(self, output_dir: str, shard: Shard, resolutions: Sequence[int]):
        import tensorflow as tf

        self.output_dir = output_dir
        self.shard = shard
        self.final = {r: os.path.join(output_dir, shard.path(r)) for r in resolutions}
        # A full disk shows as an OSError from Python's own writes and as one of TensorFlow's
        # errors from its record writer.
        self.write_errors = (OSError, tf.errors.OpError)
        self.writers = {}
        for r, path in self.final.items():
            try:
                self.writers[r] = tf.io.TFRecordWriter(path + TMP_SUFFIX)
            except self.write_errors as e:
                self.abort()
                raise _write_failed(path + TMP_SUFFIX, e) from None
        self.grades = [0] * NUM_GRADES
        self.labels: Dict[str, Dict[str, int]] = {}  # extra label → {value: records}
        self.written = 0
        self.errors: List[Dict[str, str]] = []

    def add(self, record: InputRecord, encoded: Dict[int, bytes], source: str) -> None:
        for resolution, writer in self.writers.items():
            try:
                faults.point("build.write")
                writer.write(records.make_example(encoded[resolution], resolution, record.grade,
                                                  record.image_id, record.patient_id,
                                                  record.eye, source, record.label_dict()))
            except self.write_errors as e:
                raise _write_failed(self.final[resolution] + TMP_SUFFIX, e) from None
        self.grades[record.grade] += 1
        for name, value in record.labels:
            counts = self.labels.setdefault(name, {})
            counts[str(value)] = counts.get(str(value), 0) + 1
        self.written += 1

    def abort(self) -> None:
        """Closes and deletes this shard's temporary files (after a failure: frees the space)."""
        for writer in self.writers.values():
            try:
                writer.close()
            except Exception:  # the disk that failed the write may fail the flush too
                pass
        for path in self.final.values():
            if os.path.exists(path + TMP_SUFFIX):
                os.remove(path + TMP_SUFFIX)

    def commit(self, state_dir: str) -> Dict:
        for resolution, path in self.final.items():
            try:
                self.writers[resolution].close()
                with open(path + TMP_SUFFIX, "rb") as f:
                    os.fsync(f.fileno())
            except self.write_errors as e:
                raise _write_failed(path + TMP_SUFFIX, e) from None
        for path in self.final.values():
            os.replace(path + TMP_SUFFIX, path)
        summary = {"split": self.shard.split, "name": self.shard.name, "count": self.written,
                   "grades": self.grades, "errors": self.errors,
                   "patients": sorted({r.patient_id for r in self.shard.inputs})}
        if self.labels:  # only builds with extra labels record them (the others keep their bytes)
            summary["labels"] = self.labels
        _atomic_write(os.path.join(state_dir, self.shard.name + ".json"), _json_bytes(summary))
        return summary


def _progress(total: int, initial: int, quiet: bool):
    return progress.progress(total=total, initial=initial, unit="img", desc="building",
                             quiet=quiet, bar_format="{desc}: {n_fmt}/{total_fmt} images |{bar}| "
                                                     "{rate_fmt} [{elapsed}<{remaining}]{postfix}")


def _tasks(shards: Iterable[Shard], config: BuilderConfig, payloads: Dict[str, bytes]
           ) -> Iterator[build_worker.Task]:
    index = 0
    for shard in shards:
        for record in shard.inputs:
            yield build_worker.Task(index, record.kind, record.location, record.grade,
                                    tuple(config.resolutions), config.jpeg_quality,
                                    payloads.get(record.location))
            index += 1


WORKER_DIED = ("the worker process died while processing this photograph (a crash in a "
               "decoder, or killed, e.g. out of memory); retried alone, it died again")
TASKS_IN_FLIGHT_PER_WORKER = 2  # tasks queued ahead per worker: keeps workers busy, bounds memory


WORKERS_DID_NOT_START = (
    "the builder's worker processes exit while starting, before they are given a photograph "
    "(their error is printed above). Workers are spawned: each one imports the main "
    "module of the program that started the build. If you call m2cnn_tf.builder.build from "
    "your own script, put the call under `if __name__ == \"__main__\":`; or build with "
    "num_workers=1 (--num_workers=1), which runs in this process")


def _spawn_pool(num_workers: int) -> concurrent.futures.ProcessPoolExecutor:
    return concurrent.futures.ProcessPoolExecutor(
        num_workers, mp_context=multiprocessing.get_context("spawn"),
        initializer=build_worker.init_worker)


def _succeeded(future: concurrent.futures.Future) -> bool:
    return future.done() and not future.cancelled() and future.exception() is None


def _run_alone(task: build_worker.Task) -> concurrent.futures.Future:
    """Runs one task in a fresh process; a death there is that photograph's error.

    The process first runs ``build_worker.ready``: if it dies before even that, no worker can
    start at all (a BuildError), which is not the photograph's fault.
    """
    done: concurrent.futures.Future = concurrent.futures.Future()
    with _spawn_pool(1) as pool:
        ready = pool.submit(build_worker.ready)  # one worker: it runs first
        try:
            done.set_result(pool.submit(build_worker.process, task).result())
        except concurrent.futures.process.BrokenProcessPool:
            if not _succeeded(ready):
                raise BuildError(WORKERS_DID_NOT_START) from None
            done.set_result(build_worker.Result(task.index, None, WORKER_DIED))
    return done


def _run_tasks(tasks: Iterator[build_worker.Task], num_workers: int):
    """Results in task order, from a pool of spawned (TensorFlow-free) workers.

    A worker that dies (a decoder crashing on a hostile file, the out-of-memory killer) breaks
    the pool instead of hanging the build: the tasks it may have held are re-run one by one in
    fresh processes — a photograph that kills its process again is reported as an error, the
    others go through — and a new pool takes the rest.
    """
    if num_workers <= 1:
        build_worker.init_worker()
        for task in tasks:
            yield build_worker.process(task)
        return
    tasks = iter(tasks)
    window = TASKS_IN_FLIGHT_PER_WORKER * num_workers
    in_flight: collections.deque = collections.deque()  # (task, future), in task order
    pool = None
    try:
        while True:
            if pool is None:
                pool = _spawn_pool(num_workers)
            try:
                while len(in_flight) < window:
                    task = next(tasks, None)
                    if task is None:
                        break
                    in_flight.append((task, None))  # kept even if submitting finds it broken
                    in_flight[-1] = (task, pool.submit(build_worker.process, task))
                if not in_flight:
                    return
                result = in_flight[0][1].result()
            except concurrent.futures.process.BrokenProcessPool:
                pool.shutdown(wait=True, cancel_futures=True)
                pool = None
                in_flight = collections.deque(
                    (t, f if f is not None and _succeeded(f) else _run_alone(t))
                    for t, f in in_flight)
                continue
            in_flight.popleft()
            yield result
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


# The BuilderConfig fields that decide the bytes of a build, recorded in its plan: a re-run with
# other values is refused. (num_workers and max_error_fraction change no byte.)
PLANNED_SETTINGS = ("resolutions", "jpeg_quality", "examples_per_shard", "val_fraction", "seed")


def build(
    inputs: Sequence[InputRecord],
    skipped: Sequence[SkippedInput],
    output_dir: str,
    config: BuilderConfig,
    source_info: Dict,
    payloads: Optional[Dict[str, bytes]] = None,
    images_root: Optional[str] = None,
    quiet: bool = False,
    preprocess: PreprocessConfig = PREPROCESS,
) -> Dict:
    """Builds (or finishes building) a dataset; returns the manifest.

    Args:
      inputs: the photographs (``sources``); splits unset are assigned here.
      skipped: inputs the source already rejected (label errors...), reported in errors.csv.
      output_dir: the dataset folder.
      config: resolutions, quality, sharding, split, seed, error and worker settings.
      source_info: how the source was given (flags), recorded in the manifest.
      payloads: encoded photographs held in memory (TFDS), by location.
      images_root: paths are stored relative to this in the records.
      quiet: no progress bar.
      preprocess: preprocessing constants (recorded in the manifest).

    Returns:
      The manifest dict (also written to ``output_dir/manifest.json``).

    Raises:
      BuildError: bad settings, a folder holding a different build, no inputs, or more skipped
        inputs than ``max_error_fraction`` allows. Completed shards are never left half-written.
      locking.LockedError: another build is writing the same folder.
    """
    try:
        config.validate()
        inputs = splits.assign_splits(inputs, config.val_fraction, config.seed)
    except ValueError as e:
        raise BuildError(str(e)) from None
    if not inputs:
        raise _no_usable_inputs(skipped)
    shards = plan_shards(inputs, config.examples_per_shard, config.seed)
    plan = _plan(inputs, skipped, shards, config, preprocess)
    state_dir = os.path.join(output_dir, STATE_DIR)
    os.makedirs(state_dir, exist_ok=True)
    with locking.DirectoryLock(os.path.join(state_dir, LOCK), "building TFRecords") as lock:
        if lock.stale_cleared:
            print(f"note: cleared a stale lock left by pid {lock.stale_cleared.get('pid')}",
                  file=sys.stderr)
        _check_or_write_plan(output_dir, state_dir, plan)
        for resolution in config.resolutions:
            os.makedirs(os.path.join(output_dir, str(resolution)), exist_ok=True)
        _remove_leftovers(output_dir, config.resolutions)
        done = _completed_shards(output_dir, state_dir, shards, config.resolutions)
        _write_shards(shards, done, output_dir, config, payloads or {}, images_root,
                      len(inputs), quiet)
        return _finish(output_dir, shards, done, skipped, len(inputs) + len(skipped), config,
                       plan, source_info)


def _no_usable_inputs(skipped: Sequence[SkippedInput]) -> BuildError:
    """The error for a build left with no input, with the commonest reasons the source gave."""
    reasons = collections.Counter(s.reason.split(" (")[0] for s in skipped)
    return BuildError("no usable inputs" + (f": {len(skipped)} skipped ("
                      + "; ".join(f"{n}× {r}" for r, n in reasons.most_common(3)) + ")"
                      if skipped else ""))


def _plan(inputs: Sequence[InputRecord], skipped: Sequence[SkippedInput], shards: List[Shard],
          config: BuilderConfig, preprocess: PreprocessConfig) -> Dict:
    """What a build of these inputs and settings writes; a re-run must plan the same."""
    settings = {name: getattr(config, name) for name in PLANNED_SETTINGS}
    settings["resolutions"] = list(config.resolutions)
    return {"inputs_checksum": inputs_checksum(inputs, skipped),
            "builder_version": BUILDER.version,
            "preprocessing": dataclasses.asdict(preprocess),
            "settings": settings,
            "shards": [s.name for s in shards]}


def _completed_shards(output_dir: str, state_dir: str, shards: Sequence[Shard],
                      resolutions: Sequence[int]) -> Dict[str, Dict]:
    """{shard name: its saved summary} of the shards an earlier run finished."""
    done: Dict[str, Dict] = {}
    for shard in shards:
        path = os.path.join(state_dir, shard.name + ".json")
        if os.path.exists(path) and all(os.path.exists(os.path.join(output_dir, shard.path(r)))
                                        for r in resolutions):
            with open(path) as f:
                done[shard.name] = json.load(f)
    if done:
        print(f"resuming: {len(done)} of {len(shards)} shards already complete", file=sys.stderr)
    return done


def _write_shards(shards: Sequence[Shard], done: Dict[str, Dict], output_dir: str,
                  config: BuilderConfig, payloads: Dict[str, bytes],
                  images_root: Optional[str], total: int, quiet: bool) -> None:
    """Processes and writes every shard not in ``done``, adding each one's summary to it."""
    pending = [s for s in shards if s.name not in done]
    finished_inputs = sum(len(s.inputs) for s in shards if s.name in done)
    workers = config.num_workers or os.cpu_count() or 1
    workers = max(1, min(workers, sum(len(s.inputs) for s in pending) or 1))
    state_dir = os.path.join(output_dir, STATE_DIR)
    bar = _progress(total, finished_inputs, quiet)
    error_count = sum(len(d["errors"]) for d in done.values())
    try:
        results = _run_tasks(_tasks(pending, config, payloads), workers)
        for shard in pending:
            writer = _ShardWriter(output_dir, shard, config.resolutions)
            try:
                for record in shard.inputs:
                    result = next(results)
                    if result.error is not None:
                        writer.errors.append({"file": record.location, "reason": result.error})
                        error_count += 1
                        bar.set_postfix_str(f"{error_count} skipped")
                    else:
                        writer.add(record, result.encoded,
                                   _relative_source(record.location, images_root))
                    faults.point("build.record")
                    bar.update(1)
                done[shard.name] = writer.commit(state_dir)
            except BaseException:
                writer.abort()
                raise
            faults.point("build.shard")
    finally:
        bar.close()


def _finish(output_dir: str, shards: Sequence[Shard], done: Dict[str, Dict],
            skipped: Sequence[SkippedInput], total: int, config: BuilderConfig, plan: Dict,
            source_info: Dict) -> Dict:
    """Writes errors.csv and, unless too many inputs were skipped, manifest.json (last)."""
    all_errors = [{"file": s.file, "reason": s.reason} for s in skipped]
    for shard in shards:
        all_errors += done[shard.name]["errors"]
    _write_errors(output_dir, all_errors)
    # Inputs the dataset's own rule leaves out (an "ungradable" label) are listed, not faults.
    excluded = [{"file": s.file, "reason": s.reason} for s in skipped if s.excluded]
    faults = len(all_errors) - len(excluded)
    fraction = faults / (total - len(excluded)) if total > len(excluded) else 0.0
    if fraction > config.max_error_fraction:
        raise BuildError(
            f"{faults} of {total - len(excluded)} inputs ({fraction:.1%}) were skipped, more than "
            f"--max_error_fraction={config.max_error_fraction:g}; see "
            f"{os.path.join(output_dir, ERRORS)}. No manifest was written; fix the inputs "
            "or raise the limit and run the same command again (finished shards are kept)")
    manifest = _manifest(shards, done, config, plan, source_info, total, all_errors)
    if excluded:  # only builds with exclusions say so (the others keep their manifest)
        manifest["excluded"] = len(excluded)
        manifest["excluded_reasons"] = dict(collections.Counter(
            e["reason"].split(" (")[0] for e in excluded).most_common())
    _atomic_write(os.path.join(output_dir, MANIFEST), _json_bytes(manifest))
    return manifest


def _check_or_write_plan(output_dir: str, state_dir: str, plan: Dict) -> None:
    path = os.path.join(state_dir, PLAN)
    if os.path.exists(path):
        with open(path) as f:
            previous = json.load(f)
        if previous != plan:
            changed = sorted(k for k in set(previous) | set(plan)
                             if previous.get(k) != plan.get(k))
            raise BuildError(
                f"{output_dir} holds a build of different inputs or settings (differs in: "
                f"{', '.join(changed)}); choose a new --output_dir, or delete this one to rebuild")
    elif any(e.endswith(".tfrecord") for d in os.listdir(output_dir)
             if os.path.isdir(os.path.join(output_dir, d)) and d != STATE_DIR
             for e in os.listdir(os.path.join(output_dir, d))):
        raise BuildError(f"{output_dir} already holds TFRecords that this builder did not plan; "
                         "choose an empty --output_dir")
    else:
        _atomic_write(path, _json_bytes(plan))


def _remove_leftovers(output_dir: str, resolutions: Sequence[int]) -> None:
    """Deletes temporary files of an interrupted run (never visible as shards)."""
    for folder in [os.path.join(output_dir, str(r)) for r in resolutions] + [
            output_dir, os.path.join(output_dir, STATE_DIR)]:
        for name in os.listdir(folder):
            if name.endswith(TMP_SUFFIX):
                os.remove(os.path.join(folder, name))


def _write_errors(output_dir: str, errors: List[Dict[str, str]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["file", "reason"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(errors)
    _atomic_write(os.path.join(output_dir, ERRORS),
                  buffer.getvalue().encode("utf-8", errors="surrogateescape"))


def _add_label_counts(entry: Dict, summary: Dict) -> None:
    """Adds a shard's extra-label counts to its split's manifest entry: per label, the records
    that have it (``known``, and how many of each value) and those that do not (``unknown``)."""
    if not summary.get("labels") and "labels" not in entry:
        return
    labels = entry.setdefault("labels", {})
    for name in set(labels) | set(summary.get("labels", {})):
        counts = summary.get("labels", {}).get(name, {})
        known = sum(counts.values())
        slot = labels.setdefault(name, {"known": 0, "unknown": entry["count"] - summary["count"],
                                        "values": {}})
        slot["known"] += known
        slot["unknown"] += summary["count"] - known
        for value, n in counts.items():
            slot["values"][value] = slot["values"].get(value, 0) + n


def _manifest(shards, done, config: BuilderConfig, plan, source_info, total, errors) -> Dict:
    per_split: Dict[str, Dict] = {}
    for shard in shards:
        summary = done[shard.name]
        entry = per_split.setdefault(shard.split, {
            "count": 0, "grades": [0] * NUM_GRADES, "patients": set(),
            "resolutions": {str(r): {"shards": []} for r in config.resolutions}})
        entry["count"] += summary["count"]
        entry["grades"] = [a + b for a, b in zip(entry["grades"], summary["grades"])]
        entry["patients"].update(summary["patients"])
        for r in config.resolutions:
            entry["resolutions"][str(r)]["shards"].append(shard.path(r))
        _add_label_counts(entry, summary)
    for entry in per_split.values():
        entry["patients"] = len(entry["patients"])
        for r in entry["resolutions"].values():
            r["count"] = entry["count"]
    reasons = collections.Counter(e["reason"].split(" (")[0] for e in errors)
    return {
        "builder_version": BUILDER.version,
        "package_version": __version__,
        "source": source_info,
        "resolutions": list(config.resolutions),
        "jpeg_quality": config.jpeg_quality,
        "seed": config.seed,
        "val_fraction": config.val_fraction,
        "examples_per_shard": config.examples_per_shard,
        "preprocessing": plan["preprocessing"],
        "inputs_checksum": plan["inputs_checksum"],
        "inputs": total,
        "skipped": len(errors),
        "skipped_reasons": dict(reasons.most_common()),
        "splits": per_split,
        "features": {
            "image": records.IMAGE_ENCODED, "grade": records.GRADE, "id": records.IMAGE_ID,
            "patient_id": records.PATIENT_ID, "eye": records.EYE, "source": records.SOURCE,
            **{name: records.EXTRA_LABELS[name] for name in sorted(
                {n for e in per_split.values() for n in e.get("labels", {})})}},
    }


def read_manifest(data_dir: str) -> Dict:
    """Loads a build's manifest; raises FileNotFoundError with what the folder holds instead."""
    path = os.path.join(data_dir, MANIFEST)
    if not os.path.isfile(path):
        if not os.path.isdir(data_dir):
            raise FileNotFoundError(f"data folder {data_dir} does not exist; build one with "
                                    "python build_tfrecords.py")
        hint = (" (a build was started here but did not finish: run the same "
                "build_tfrecords.py command again)" if os.path.isdir(
                    os.path.join(data_dir, STATE_DIR)) else "")
        raise FileNotFoundError(f"{data_dir} has no {MANIFEST}{hint}; it holds: "
                                f"{', '.join(sorted(os.listdir(data_dir))) or 'nothing'}")
    with open(path) as f:
        return json.load(f)


def summary_table(manifest: Dict) -> str:
    """A few lines for the terminal: images per split and grade."""
    lines = [f"{'split':<11}{'images':>8}{'patients':>10}  grades 0/1/2/3/4"]
    for split in SPLITS:
        entry = manifest["splits"].get(split)
        if entry:
            lines.append(f"{split:<11}{entry['count']:>8}{entry['patients']:>10}  "
                         + "/".join(map(str, entry["grades"])))
    lines.append(f"skipped: {manifest['skipped']} of {manifest['inputs']} inputs"
                 + (f" ({', '.join(f'{n}× {r}' for r, n in manifest['skipped_reasons'].items())})"
                    if manifest["skipped"] else "")
                 + (f"; {manifest['excluded']} of them excluded by the dataset's own rules"
                    if manifest.get("excluded") else ""))
    return "\n".join(lines)


def default_output_dir(source: str, config: BuilderConfig = BUILDER) -> str:
    return os.path.join(config.output_root, source)


