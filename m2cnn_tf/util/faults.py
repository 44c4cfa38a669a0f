"""Fault-injection hooks for the reliability suite (tests/reliability); inert unless asked for.

The builder and the training loop call ``point(name)`` at a few named places. Nothing happens
unless the environment variable ``M2CNN_FAULTS`` holds rules (or a test calls ``configure``),
so a user never meets them; with rules, a process can be killed or made to fail at an exact,
countable place — the n-th record, shard or checkpoint — instead of at a moment chosen by a
timer, which is what makes the interruption tests repeatable.

``M2CNN_FAULTS`` is a ``;``-separated list of ``<point>:<n>:<action>[:<argument>]``:

  point     where: one of ``POINTS`` below
  n         the pass through that point (1 = the first) at which the action happens
  action    ``kill``: SIGKILL this process (no cleanup, no atexit — like ``kill -9``);
            ``enospc``: raise OSError(ENOSPC, "No space left on device") — a full disk;
            ``truncate-kill``: cut every file the point just wrote to ``argument`` bytes, then
            SIGKILL — a process killed while those bytes were being written;
            ``stop``: SIGSTOP this process, holding whatever it holds (its locks), until the
            test sends SIGCONT or SIGKILL — a second process can then meet it deterministically;
  ``nonfinite`` (graph points only): make the values there NaN on replica ``argument`` (default 0)
            — an overflow on one device of several.

Graph points (``GRAPH_POINTS``) live inside a TensorFlow graph: ``point`` is never called there;
the code that builds the graph reads ``graph_rules(name)`` when it traces it, and the graph
counts by itself (for ``train.gradients``, n is the training step as the logs number it).

Example: ``M2CNN_FAULTS="build.shard:2:kill"`` kills a build right after its second shard.
"""

from __future__ import annotations

import errno
import os
import signal
from typing import Dict, List, Optional, Sequence, Tuple

ENV = "M2CNN_FAULTS"
POINTS = {
    "build.record": "the builder wrote one record of a shard (all resolutions), not committed",
    "build.decode": "a build worker process starts on a photograph (counted per worker "
                    "process)",
    "build.shard": "the builder committed one shard (files renamed, summary saved)",
    "build.write": "the builder is about to write a file or a record",
    "checkpoint.written": "a rolling checkpoint's files are complete, not yet recorded as latest",
    "checkpoint.saved": "a rolling checkpoint is recorded as latest",
    "checkpoint.best_written": "best/ holds the new best checkpoint, best/best.json not yet "
                               "updated",
    "report.jsonl": "a line was appended to metrics.jsonl",
    "report.tensorboard": "TensorBoard scalars or an image are about to be written",
    "train.gradients": "one replica's gradients of a training step, before the optimiser "
                       "(a graph point)",
}
GRAPH_POINTS = ("train.gradients",)
ACTIONS = ("kill", "enospc", "truncate-kill", "stop", "nonfinite")
GRAPH_ACTIONS = ("nonfinite",)

_rules: Optional[Dict[str, List]] = None
_counts: Dict[str, int] = {}


def _parse(text: str) -> Dict[str, List]:
    rules: Dict[str, List] = {}
    for item in filter(None, (part.strip() for part in text.split(";"))):
        fields = item.split(":")
        if len(fields) not in (3, 4) or fields[0] not in POINTS or fields[2] not in ACTIONS:
            raise ValueError(f"{ENV}: bad rule {item!r}; expected <point>:<n>:<action>[:<arg>] "
                             f"with a point in {sorted(POINTS)} and an action in {ACTIONS}")
        if (fields[0] in GRAPH_POINTS) != (fields[2] in GRAPH_ACTIONS):
            raise ValueError(f"{ENV}: bad rule {item!r}; the graph points {GRAPH_POINTS} take "
                             f"the actions {GRAPH_ACTIONS}, and only they do")
        rules.setdefault(fields[0], []).append(
            (int(fields[1]), fields[2], fields[3] if len(fields) == 4 else None))
    return rules


def configure(text: Optional[str] = None) -> None:
    """(Re)reads the rules from ``text`` or ``$M2CNN_FAULTS`` and restarts the counts."""
    global _rules
    _rules = _parse(os.environ.get(ENV, "") if text is None else text)
    _counts.clear()


def graph_rules(name: str) -> List[Tuple[int, str, Optional[str]]]:
    """The rules for a graph point, for the code that builds the graph (when it traces it).

    Args:
      name: one of ``GRAPH_POINTS``.

    Returns:
      ``[(n, action, argument)]``, empty unless ``M2CNN_FAULTS`` (or ``configure``) names it.
    """
    if _rules is None:
        configure()
    return list(_rules.get(name, ()))


def point(name: str, paths: Sequence[str] = ()) -> None:
    """Marks one pass through ``name``; performs the action of a rule for this pass, if any.

    Args:
      name: one of ``POINTS``.
      paths: files just written at this point (for ``truncate-kill``).
    """
    if _rules is None:
        configure()
    if not _rules or name not in _rules:
        return
    _counts[name] = _counts.get(name, 0) + 1
    for n, action, argument in _rules[name]:
        if n != _counts[name]:
            continue
        if action == "enospc":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC) + f" (injected at {name} #{n})")
        if action == "truncate-kill":
            for path in paths:
                with open(path, "r+b") as f:
                    f.truncate(min(int(argument), os.path.getsize(path)))
        if action == "stop":
            os.kill(os.getpid(), signal.SIGSTOP)
            continue
        os.kill(os.getpid(), signal.SIGKILL)
