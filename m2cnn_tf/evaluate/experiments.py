"""Running the paper's experiments: ``run_experiment`` is the whole of ``python experiments.py``.

In order:

1. The plan (``experiment_plan.plan_experiment``): the experiment's runs, parents first, each
   with its estimated GPU hours; printed, and with ``--dry_run`` that is all.
2. Each run in turn, in this process (``train.loop.train_and_evaluate``): a finished run
   (``experiment_plan.run_finished``) is skipped, a run with checkpoints resumes from its
   latest, a new one starts from its parent's best checkpoint or, when it continues its
   parent's run, from a copy of the parent's folder (``copy_parent_run``).
3. Each run a table reads is evaluated once on validation and test (``evaluate_run``): its best
   checkpoint, thresholds fitted on validation, kappa with bootstrap intervals over patients
   (``evaluate.collect``, ``grading.assessment``); the result is kept in the run's folder and
   reused while its best checkpoint stays the same.
4. ``experiment_report`` writes the table or Fig. 4, and results.json.

An interrupted experiment loses at most the training since each run's last checkpoint:
re-running the same command resumes it.
"""

from __future__ import annotations

import os
import re
import shutil
from typing import Callable, Dict, List

from m2cnn_tf import config
from m2cnn_tf.data import builder
from m2cnn_tf.evaluate import collect, experiment_plan, experiment_report
from m2cnn_tf.evaluate.experiment_plan import ExperimentConfig, PlannedRun
from m2cnn_tf.grading import thresholds
from m2cnn_tf.serving import predictor as predictors
from m2cnn_tf.train import checkpoints, distribution
from m2cnn_tf.train import loop as training
from m2cnn_tf.util import atomic, progress

# A run's evaluation for the tables, kept in its folder.
EVALUATION_JSON = "experiment_evaluation.json"
VALIDATION, TEST = "validation", "test"
# The files of a TensorFlow checkpoint, written once and never changed: a continued run's copy
# of its parent's folder links them instead of copying (a 720 px checkpoint is gigabytes).
_CHECKPOINT_FILE = re.compile(r"\.(index|data-\d+-of-\d+)$")


class ExperimentError(ValueError):
    """The experiment cannot start or go on; the message says why."""


def run_experiment(c: ExperimentConfig, quiet: bool = False,
                   echo: Callable[[str], None] = print) -> Dict:
    """Plans, trains (or resumes), evaluates and reports one of the paper's experiments.

    Args:
      c: the runner's settings (experiments.py's flags).
      quiet: no progress bars or per-run messages (the plan and the result still go to echo).
      echo: where the plan and the final table are printed.

    Returns:
      ``{"plan": rows}`` with ``c.dry_run``; otherwise the results (``results.json``) with
      ``"paths"``: the files written.

    Raises:
      ExperimentError: bad settings or data (before any training), or a process whose
        TensorFlow had started already without one-op-at-a-time for ``--deterministic``.
      training.TrainingError, training.NonFiniteLossError, locking.LockedError: from a run.
    """
    try:
        plan = experiment_plan.plan_experiment(c)
    except ValueError as e:
        raise ExperimentError(str(e)) from None
    if c.deterministic and not c.dry_run:
        try:  # before the estimates build networks: TensorFlow must not have started yet
            distribution.run_ops_one_at_a_time()
        except RuntimeError as e:
            raise ExperimentError(str(e)) from None
    estimates = experiment_plan.estimate_hours(plan)
    echo(experiment_plan.format_plan(c, plan, estimates))
    if c.dry_run:
        return {"plan": experiment_plan.plan_rows(plan, estimates)}
    check_data(c, plan)
    log = (lambda message: None) if quiet else progress.write
    evaluated = set(experiment_report.evaluated_runs(c.experiment))
    evaluations = {}
    for index, run in enumerate(plan, 1):
        train_run(plan, run, f"[{index}/{len(plan)}] {run.name}", log, quiet)
        if run.name in evaluated:
            evaluations[run.name] = evaluate_run(run, c, log, quiet)
    results = experiment_report.build_results(c, plan, estimates, evaluations)
    results["paths"] = experiment_report.write_outputs(
        results, experiment_plan.output_dir_of(c), plan)
    echo(experiment_report.summary_text(results))
    echo("wrote " + ", ".join(results["paths"].values()))
    return results


def check_data(c: ExperimentConfig, plan: List[PlannedRun]) -> None:
    """Every resolution the runs train at, with train and validation images, is in
    ``--data_dir`` — checked before the first run starts (``training.check_data``)."""
    for resolution in sorted({run.config.resolution for run in plan}):
        try:
            training.check_data(c.data_dir, resolution, ["train", VALIDATION])
        except training.TrainingError as e:
            raise ExperimentError(f"{e} (this experiment trains at "
                                  f"{', '.join(str(r.config.resolution) for r in plan)} px)"
                                  ) from None


def train_run(plan: List[PlannedRun], run: PlannedRun, label: str, log, quiet: bool) -> None:
    """Trains one run up to its steps, unless it is finished; a continued run first gets a
    copy of its parent's folder (its parent, earlier in the plan, is finished)."""
    c = run.config
    if experiment_plan.run_finished(c.model_dir, c.train_steps):
        log(f"{label}: finished ({c.train_steps} steps), kept as it is")
        return
    if run.relation == config.RELATION_CONTINUE:
        parent = next(r for r in plan if r.name == run.parent)
        if copy_parent_run(parent.config.model_dir, c.model_dir):
            log(f"{label}: copied {parent.config.model_dir} to continue it")
    log(f"{label}: training {c.variant} at {c.resolution} px to step {c.train_steps} "
        f"({experiment_plan.run_status(run)}; init {c.init})")
    training.train_and_evaluate(c, quiet=quiet)


def _link_or_copy(source: str, target: str) -> str:
    if _CHECKPOINT_FILE.search(source):
        try:
            os.link(source, target)
            return target
        except OSError:
            pass  # another file system, or no hard links: copy
    return shutil.copy2(source, target)


def copy_parent_run(source: str, target: str) -> bool:
    """Makes ``target`` a copy of the finished run in ``source``, to be trained on (a continued
    preset, ``config.RELATION_CONTINUE``): whole or not at all (``atomic.staged_directory``);
    checkpoint files are hard-linked where possible, everything else copied (metrics.jsonl is
    appended to); the lock and unfinished writes are left out.

    Returns:
      True if copied; False if ``target`` exists already (a copy made before: resume in it).
    """
    if os.path.isdir(target):
        return False
    os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
    with atomic.staged_directory(target) as staging:
        shutil.copytree(source, staging, dirs_exist_ok=True, copy_function=_link_or_copy,
                        ignore=shutil.ignore_patterns(checkpoints.LOCK, f"*{atomic.TMP_SUFFIX}"))
    return True


def _available_splits(data_dir: str) -> List[str]:
    splits = builder.read_manifest(data_dir).get("splits", {})
    return [s for s in (VALIDATION, TEST) if splits.get(s, {}).get("count", 0)]


def evaluate_run(run: PlannedRun, c: ExperimentConfig, log, quiet: bool) -> Dict:
    """A run's best checkpoint on validation and (where the data has one) test: thresholds
    fitted on validation (saved as the run's thresholds.json, where export.py reads them),
    then ``collect.evaluate_predictions`` of each split with them. Kept in the run's
    ``experiment_evaluation.json`` and reused while the best checkpoint, the data and the
    bootstrap stay the same.

    Returns:
      ``{"checkpoint_step", "data_dir", "bootstrap", "prediction", "thresholds",
      "rounding_kappa_validation", "reports": {split: report}}``.
    """
    model_dir = run.config.model_dir
    best = checkpoints.read_best_record(model_dir)
    key = {"checkpoint_step": best["step"] if best else None,
           "data_dir": os.path.abspath(c.data_dir), "bootstrap": c.bootstrap}
    path = os.path.join(model_dir, EVALUATION_JSON)
    if os.path.isfile(path):
        kept = checkpoints.read_json(path)
        if all(kept.get(k) == v for k, v in key.items()):
            return kept
    log(f"evaluating {run.name} (best checkpoint, step {key['checkpoint_step']})")
    model = predictors.open_predictor(model_dir, checkpoints.BEST)
    facts = collect.dataset_facts(c.data_dir)
    predictions = {split: collect.predictions_from_records(model, c.data_dir, split,
                                                           quiet=quiet)[0]
                   for split in _available_splits(c.data_dir)}
    validation = predictions[VALIDATION]
    rounding = thresholds.kappa_with(validation.scores, validation.grades)
    cuts, fitted = thresholds.fit_thresholds(validation.scores, validation.grades)
    thresholds.save_thresholds(model_dir, cuts, fitted, rounding, VALIDATION)
    record = {**key, "prediction": run.config.prediction, "thresholds": list(cuts),
              "rounding_kappa_validation": rounding,
              "reports": {split: collect.evaluate_predictions(p, cuts, facts,
                                                              num_resamples=c.bootstrap)
                          for split, p in predictions.items()}}
    atomic.write_json(path, record, indent=1)
    return record
