"""Reporting the paper's experiments: Table II and III beside the paper's numbers, Fig. 4's
curves, and ``results.json``.

The tables keep the paper's layout (its rows and columns, ``config.PAPER_EXPERIMENTS``); each
cell gives our kappa with its bootstrap 95 % interval over patients (``grading.stats``, through
the evaluation reports of ``grading.assessment``) and the paper's. Fig. 4's curves are each
run's validation kappa at every evaluation in its ``metrics.jsonl``, against the steps and the
hours of training counted from the first stage of its lineage, as the paper's labels count them.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Dict, List

import numpy as np
from matplotlib.figure import Figure

from m2cnn_tf import config
from m2cnn_tf.evaluate import experiment_plan
from m2cnn_tf.evaluate.experiment_plan import ExperimentConfig, PlannedRun
from m2cnn_tf.train import checkpoints, summaries
from m2cnn_tf.train import loop as training
from m2cnn_tf.util import atomic, plots

RESULTS_JSON = "results.json"
FIG4_PNG, FIG4_MD = "fig4.png", "fig4.md"
TITLES = {"table2": "Table II — results of each module (validation kappa)",
          "table3": "Table III — BaseNet, BaseNet+MT and M²CNN (kappa)",
          "fig4": "Fig. 4 — validation kappa against steps and hours"}
SECONDS_PER_HOUR = 3600.0


def evaluated_runs(experiment: str) -> List[str]:
    """The runs whose kappas fill a table (none for Fig. 4, which reads the training logs)."""
    results = config.PAPER_EXPERIMENTS[experiment]
    return list(dict.fromkeys(r.preset for r in results if isinstance(r, config.PaperResult)))


def run_was_deterministic(model_dir: str) -> bool:
    """Whether every training session of a run was ``--deterministic`` (config.json records
    the flags of the last start and of each earlier one)."""
    run = checkpoints.read_run_config(model_dir)
    sessions = [run.get("flags", {})] + list(run.get("earlier_flags", []))
    return all(bool(flags.get("deterministic")) for flags in sessions)


# --------------------------------------------------------------------------------------------
# Curves from metrics.jsonl (Fig. 4)
# --------------------------------------------------------------------------------------------


def training_curve(run: PlannedRun) -> Dict:
    """A run's validation kappa (by the head it is selected by) at each evaluation, with the
    hours of training up to it: its train windows' time (steps × batch / images per second)
    and its evaluations' time, in metrics.jsonl's order — pauses between sessions not counted.

    Returns:
      ``{"steps", "hours", "kappa", "total_hours", "metric"}``: lists by step (the last
      evaluation of a step repeated after a resume wins), and the run's whole training time.
    """
    metric = training.selection_metric(run.config)
    seconds, at_step = 0.0, {}
    for record in summaries.read_metrics(run.config.model_dir):
        if record.get("kind") == "train" and record.get("images_per_second"):
            seconds += record["steps"] * run.config.batch_size / record["images_per_second"]
        elif record.get("kind") == "eval":
            seconds += record["metrics"].get("seconds", 0.0)
            at_step[record["step"]] = (seconds / SECONDS_PER_HOUR, record["metrics"][metric])
    steps = sorted(at_step)
    return {"steps": steps, "hours": [at_step[s][0] for s in steps],
            "kappa": [at_step[s][1] for s in steps], "total_hours": seconds / SECONDS_PER_HOUR,
            "metric": metric}


def lineage_curves(plan: List[PlannedRun]) -> Dict[str, Dict]:
    """Each run's ``training_curve`` counted from the first stage of its lineage: steps plus
    ``step_offset``, hours plus the whole training time of the runs it was initialised from (a
    continued run's log holds the run it continues already)."""
    curves: Dict[str, Dict] = {}
    for run in plan:
        curve = training_curve(run)
        base = 0.0
        if run.relation == config.RELATION_INIT:
            parent = curves[run.parent]
            base = parent["hours_offset"] + parent["total_hours"]
        elif run.relation == config.RELATION_CONTINUE:
            base = curves[run.parent]["hours_offset"]
        curve.update(hours_offset=base,
                     cumulative_steps=[s + run.step_offset for s in curve["steps"]],
                     cumulative_hours=[h + base for h in curve["hours"]])
        curves[run.name] = curve
    return curves


def fig4_points(plan: List[PlannedRun], curves: Dict[str, Dict]) -> List[Dict]:
    """The paper's labelled points on our curves: the last evaluation at or before each
    point's (scaled) step, with our hours there and the paper's."""
    points = []
    for run in plan:
        curve = curves[run.name]
        for point in run.fig4_points:
            index = int(np.searchsorted(curve["steps"], point.step, side="right")) - 1
            found = index >= 0
            points.append({
                "label": point.label, "run": run.name, "step": point.step,
                "cumulative_step": point.step + run.step_offset,
                "evaluated_step": curve["steps"][index] if found else None,
                "kappa": curve["kappa"][index] if found else None,
                "hours": curve["cumulative_hours"][index] if found else None,
                "paper_hours": point.hours})
    return points


def fig4_figure(plan: List[PlannedRun], curves: Dict[str, Dict], points: List[Dict],
                subtitle: str) -> Figure:
    """Two panels: validation kappa against steps and against hours, one curve per run, the
    paper's labelled points marked."""
    def panel(x_key: str, x_of_point: str, label: str) -> plots.Panel:
        lines = [plots.Curve(np.asarray(curves[r.name][x_key], float),
                             np.asarray(curves[r.name]["kappa"], float), r.name, marker=".")
                 for r in plan]
        marked = [plots.Point(p[x_of_point], p["kappa"], p["label"]) for p in points
                  if p["kappa"] is not None]
        return plots.Panel(lines, label, marked)

    steps = panel("cumulative_steps", "cumulative_step", "steps (from the first stage)")
    hours = panel("cumulative_hours", "hours", "hours of training on this machine (from the "
                  "first stage)")
    return plots.panels_figure([steps, hours], f"{TITLES['fig4']} — {subtitle}",
                               "validation kappa")


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------


def table_cells(experiment: str, evaluations: Dict[str, Dict]) -> List[Dict]:
    """One dict per number of the paper's table: where it stands, the paper's kappa, ours and
    its interval (None where the run or the split was not evaluated)."""
    cells = []
    for result in config.PAPER_EXPERIMENTS[experiment]:
        evaluation = evaluations.get(result.preset) or {}
        report = (evaluation.get("reports") or {}).get(result.split)
        ours = report[result.prediction] if report else {}
        cells.append({**dataclasses.asdict(result), "paper_kappa": result.kappa,
                      "kappa": ours.get("kappa"), "interval": ours.get("kappa_interval")})
    return cells


def _cell_text(cell: Dict) -> str:
    ours = "—" if cell["kappa"] is None else f"**{cell['kappa']:.3f}**"
    interval = cell["interval"]
    if interval:
        ours += f" [{interval['low']:.3f}, {interval['high']:.3f}]"
    paper = "—" if cell["paper_kappa"] is None else f"{cell['paper_kappa']:.3f}"
    return f"{ours} · paper {paper}"


def table_markdown(results: Dict) -> str:
    """The table in the paper's layout (its rows and columns), ours beside the paper's."""
    cells = results["cells"]
    rows = list(dict.fromkeys(c["row"] for c in cells))
    columns = list(dict.fromkeys(c["column"] for c in cells))
    at = {(c["row"], c["column"]): c for c in cells}
    lines = [f"# {TITLES[results['experiment']]}", "", *_settings_lines(results), "",
             "| | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for row in rows:
        lines.append(f"| {row} | " + " | ".join(
            _cell_text(at[(row, column)]) if (row, column) in at else "—"
            for column in columns) + " |")
    lines += ["", *_reading_lines(results), "", *_runs_table(results)]
    return "\n".join(lines) + "\n"


def _settings_lines(results: Dict) -> List[str]:
    s = results["settings"]
    runs = results["runs"]
    deterministic = [name for name, run in runs.items() if run.get("deterministic")]
    state = ("every run deterministic (bit-identical when rerun on the same machine)"
             if len(deterministic) == len(runs) else
             "deterministic runs: " + (", ".join(deterministic) or "none"))
    return [f"Ours: variant {s['variant'] or 'm2cnn (the presets’)'}, {s['scale']:g} × the "
            f"paper's steps, data `{s['data_dir']}`"
            + (f", sizes {', '.join(s['resolutions'])}" if s["resolutions"] else "")
            + f"; {state}."]


def _reading_lines(results: Dict) -> List[str]:
    bootstrap = results["settings"]["bootstrap"]
    return [f"Each cell: our kappa **in bold** with its bootstrap 95 % interval over patients "
            f"({bootstrap} resamples) in brackets, then the paper's. *scores*: the score cut "
            "into grades by thresholds fitted on the validation split (so a validation kappa "
            "by score is optimistic; results.json also has the plain rounding's); *prob.*: the "
            "argmax of the probabilities. A CE-only run is read by its probabilities, every "
            "other run by its score."]


def _runs_table(results: Dict) -> List[str]:
    lines = ["| run | resolution | cells | loss | steps | best step | deterministic |",
             "|---|---|---|---|---|---|---|"]
    plan = {row["run"]: row for row in results["plan"]}
    for name, run in results["runs"].items():
        row = plan[name]
        lines.append(f"| {name} | {row['resolution']} | {row['multicell']} | {row['loss']} | "
                     f"{row['train_steps']} | {run.get('best_step', '—')} | "
                     f"{'yes' if run.get('deterministic') else 'no'} |")
    return lines


def fig4_markdown(results: Dict) -> str:
    """fig4.md: the figure and its labelled points, ours beside the paper's hours."""
    lines = [f"# {TITLES['fig4']}", "", *_settings_lines(results), "", f"![Fig. 4]({FIG4_PNG})",
             "", "| point | run | step (ours, from the first stage) | validation kappa | hours "
             "here | est. GPU hours | paper's hours |", "|---|---|---|---|---|---|---|"]
    estimates = {p["label"]: p["estimated_gpu_hours"] for row in results["plan"]
                 for p in row["fig4_points"]}
    for p in results["fig4"]["points"]:
        kappa = "—" if p["kappa"] is None else f"{p['kappa']:.3f}"
        hours = "—" if p["hours"] is None else f"{p['hours']:.3f}"
        lines.append(f"| {p['label']} | {p['run']} | {p['cumulative_step']} | {kappa} | {hours} "
                     f"| {estimates[p['label']]:.1f} (estimate) | {p['paper_hours']:.1f} |")
    lines += ["", "Hours here: training and validation time on this machine from metrics.jsonl "
              "(start-up, checkpoints and pauses not counted). Est. GPU hours: see the plan's "
              "assumptions in results.json."]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# results.json and the files
# --------------------------------------------------------------------------------------------


def run_summaries(plan: List[PlannedRun], evaluations: Dict[str, Dict]) -> Dict[str, Dict]:
    """Per run: whether it was deterministic, its best step and its evaluation (if any)."""
    runs = {}
    for run in plan:
        best = checkpoints.read_best_record(run.config.model_dir)
        runs[run.name] = {"model_dir": run.config.model_dir,
                          "deterministic": run_was_deterministic(run.config.model_dir),
                          "best_step": best["step"] if best else None,
                          "evaluation": evaluations.get(run.name)}
    return runs


def build_results(c: ExperimentConfig, plan: List[PlannedRun], estimates: Dict,
                  evaluations: Dict[str, Dict]) -> Dict:
    """Everything the experiment found, JSON-serialisable: settings, the plan with its
    estimates, each run, and the table's cells or Fig. 4's curves and points."""
    results = {
        "experiment": c.experiment, "title": TITLES[c.experiment],
        "settings": dataclasses.asdict(c),
        "estimate": {"device": config.ESTIMATE_GPU_NAME,
                     "peak_tflops": config.ESTIMATE_GPU_PEAK_TFLOPS,
                     "utilisation": config.ESTIMATE_GPU_UTILISATION,
                     "training_flops_per_forward": config.TRAINING_FLOPS_PER_FORWARD,
                     "note": "an estimate from FLOPs and an assumed device, not a measurement"},
        "plan": experiment_plan.plan_rows(plan, estimates),
        "runs": run_summaries(plan, evaluations),
    }
    if c.experiment == "fig4":
        curves = lineage_curves(plan)
        results["fig4"] = {"curves": curves, "points": fig4_points(plan, curves)}
    else:
        results["cells"] = table_cells(c.experiment, evaluations)
    return results


def write_outputs(results: Dict, output_dir: str, plan: List[PlannedRun]) -> Dict[str, str]:
    """Writes results.json and table2.md / table3.md, or fig4.png and fig4.md, atomically.

    Returns:
      ``{name: path}`` of the files written.
    """
    os.makedirs(output_dir, exist_ok=True)
    paths = {"results": os.path.join(output_dir, RESULTS_JSON)}
    experiment = results["experiment"]
    if experiment == "fig4":
        fig4 = results["fig4"]
        s = results["settings"]
        subtitle = f"{s['variant'] or 'm2cnn'}, {s['scale']:g} × the paper's steps"
        paths["figure"] = os.path.join(output_dir, FIG4_PNG)
        plots.write_png(fig4_figure(plan, fig4["curves"], fig4["points"], subtitle),
                        paths["figure"])
        paths["markdown"] = os.path.join(output_dir, FIG4_MD)
        atomic.write_text(paths["markdown"], fig4_markdown(results))
    else:
        paths["markdown"] = os.path.join(output_dir, f"{experiment}.md")
        atomic.write_text(paths["markdown"], table_markdown(results))
    atomic.write_json(paths["results"], results, indent=2)
    return paths


def summary_text(results: Dict) -> str:
    """What the runner prints at the end: the table, or Fig. 4's points."""
    if results["experiment"] == "fig4":
        return fig4_markdown(results)
    return table_markdown(results)
