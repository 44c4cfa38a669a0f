"""Two learning rates, one optimiser object: ``MultiOptimizer`` routes each variable to its group.

The paper fine-tunes the weights an earlier stage learnt at LR1 = 1e-4 and trains the weights new
at this stage at LR2 = 1e-3 (III-A). Keras optimisers have one learning rate each, so each group
gets its own optimiser, and ``MultiOptimizer`` — itself a ``keras.optimizers.Optimizer`` — wraps
them. Being one optimiser, it can be wrapped in turn by ``keras.optimizers.LossScaleOptimizer``
(one loss scale for the one backward pass that serves both groups), passed to ``model.compile``,
and checkpointed as a single object whose children are the group optimisers.

Both rates follow one shape over the run (``config.LR_SCHEDULES``, ``--lr_schedule`` with an
optional ``--warmup_steps``), each scaled to its own base rate: ``GroupSchedule``, a Keras
``LearningRateSchedule`` that each group's optimiser evaluates on the device from its own step
counter, inside the train step (no host round trip), so a resumed run — whose optimisers and
counters come back from the checkpoint — continues where it stopped. The constant shape without
warm-up keeps Keras' plain float rate (a variable in the checkpoint, as before schedules
existed); any other shape is a schedule object, rebuilt from the flags at every start.
"""

from __future__ import annotations

import math
from typing import Mapping, Optional, Sequence

import keras

from m2cnn_tf import config

FINETUNE = "finetune"  # variables restored from an earlier stage (or ImageNet): LR1
NEW = "new"  # variables this stage initialises: LR2
GROUPS = (FINETUNE, NEW)


def _names(variables) -> list:
    return [getattr(v, "path", getattr(v, "name", repr(v))) for v in variables]


def _preview(names: list, limit: int = 5) -> str:
    return ", ".join(names[:limit]) + (f" … ({len(names)} in all)" if len(names) > limit else "")


class GroupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """One group's learning rate at a step: ``base_rate × warm-up × decay``.

    With ``t`` the steps already applied (the optimiser's counter), ``w`` the warm-up steps,
    ``s = max(0, t − w)`` and ``D = max(1, total_steps − w)``:

    * warm-up: ``min(1, (t + 1) / w)`` (1 when ``w`` is 0), so the w-th step runs at the full rate;
    * decay — constant: 1; cosine: ``½ (1 + cos(π · min(s, D) / D))``, 0 at ``total_steps``;
      step: ``step_factor ** n`` with ``n`` the fractions ``f`` of ``step_fractions`` for which
      ``s ≥ f · D``.

    Args:
        base_rate: the group's rate (LR1 or LR2).
        shape: one of ``config.LR_SCHEDULES``.
        total_steps: the run's ``train_steps``.
        warmup_steps: linear warm-up length (0: none).
        step_fractions: for "step", where the drops fall, as fractions of the steps after warm-up.
        step_factor: for "step", what each drop multiplies the rate by.
    """

    def __init__(self, base_rate: float, shape: str, total_steps: int, warmup_steps: int = 0,
                 step_fractions: Sequence[float] = (), step_factor: float = 1.0):
        if shape not in config.LR_SCHEDULES:
            raise ValueError(f"unknown learning-rate schedule {shape!r}; allowed: "
                             f"{', '.join(config.LR_SCHEDULES)}")
        self.base_rate = float(base_rate)
        self.shape = shape
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.step_fractions = tuple(float(f) for f in step_fractions)
        self.step_factor = float(step_factor)

    def __call__(self, step):
        t = keras.ops.cast(step, "float32")
        factor = keras.ops.ones_like(t)
        if self.warmup_steps:
            factor = keras.ops.minimum(1.0, (t + 1.0) / self.warmup_steps)
        decay_steps = float(max(1, self.total_steps - self.warmup_steps))
        after = keras.ops.maximum(0.0, t - self.warmup_steps)
        if self.shape == config.LR_COSINE:
            progress = keras.ops.minimum(after, decay_steps) / decay_steps
            factor = factor * 0.5 * (1.0 + keras.ops.cos(math.pi * progress))
        elif self.shape == config.LR_STEP:
            for fraction in self.step_fractions:
                drop = keras.ops.cast(after >= fraction * decay_steps, "float32")
                factor = factor * (1.0 + drop * (self.step_factor - 1.0))
        return self.base_rate * factor

    def get_config(self):
        return {"base_rate": self.base_rate, "shape": self.shape, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps, "step_fractions": self.step_fractions,
                "step_factor": self.step_factor}


def uses_schedule(train_config: config.TrainConfig) -> bool:
    """Whether the rates change during the run (a schedule object) or stay fixed (a variable)."""
    return train_config.lr_schedule != config.LR_CONSTANT or train_config.warmup_steps > 0


def schedule_description(train_config: config.TrainConfig) -> str:
    """The schedule's kind as config.json records it: "constant", "cosine", "step", with
    "+warmup" when there is one. Runs differing in it have different checkpoint contents."""
    return train_config.lr_schedule + ("+warmup" if train_config.warmup_steps > 0 else "")


def group_schedule(base_rate: float, train_config: config.TrainConfig) -> GroupSchedule:
    """The ``GroupSchedule`` of one group under ``train_config``'s schedule flags."""
    return GroupSchedule(base_rate, train_config.lr_schedule, train_config.train_steps,
                         train_config.warmup_steps, train_config.lr_step_fractions,
                         train_config.lr_step_factor)


class MultiOptimizer(keras.optimizers.Optimizer):
    """Applies each variable's gradient with the optimiser of the group that owns the variable.

    Args:
        optimizers: ``{group: optimizer}``, one Keras optimiser per group.
        groups: ``{group: variables}``, the same keys; a variable belongs to one group only.
        name: the optimiser's name.
        schedules: ``{group: LearningRateSchedule}`` of the groups whose optimiser runs on one,
            so that ``learning_rates`` reads every group at this optimiser's step count (a
            group with no variables never steps its own counter).

    Raises:
        ValueError: if the keys differ or a variable is in two groups.
    """

    def __init__(self, optimizers: Mapping[str, keras.optimizers.Optimizer],
                 groups: Mapping[str, Sequence], name: str = "multi_optimizer",
                 schedules: Optional[Mapping] = None):
        # The wrapper has no learning rate of its own; each group's optimiser has one.
        super().__init__(learning_rate=0.0, name=name)
        if set(optimizers) != set(groups):
            raise ValueError(f"optimizers for groups {sorted(optimizers)} but variables for "
                             f"groups {sorted(groups)}")
        self.optimizers = dict(optimizers)  # tracked: checkpoint keys "optimizers/<group>"
        self._schedules = dict(schedules or {})
        self._group_variables = {name: list(variables) for name, variables in groups.items()}
        self._group_of = {}
        twice = []
        for group, variables in self._group_variables.items():
            for v in variables:
                if id(v) in self._group_of:
                    twice.append(getattr(v, "path", v.name))
                self._group_of[id(v)] = group
        if twice:
            raise ValueError(f"variables in more than one learning-rate group: {_preview(twice)}")

    def group_of(self, variable) -> str:
        """The name of the group that owns ``variable`` (KeyError if none does)."""
        return self._group_of[id(variable)]

    def group_variables(self, group: str) -> list:
        """The variables of one group, in the order they were given."""
        return list(self._group_variables[group])

    def learning_rates(self) -> dict:
        """``{group: learning rate as a float}`` of the last step taken (of the first step
        before any), for logging next to that step's loss."""
        last = keras.ops.maximum(keras.ops.cast(self.iterations, "int64") - 1, 0)
        return {name: float(keras.ops.convert_to_numpy(
                    self._schedules[name](last) if name in self._schedules
                    else opt.learning_rate))
                for name, opt in self.optimizers.items()}

    def build(self, var_list):
        """Builds every group's optimiser on its own variables.

        Args:
            var_list: the variables this optimiser will update, e.g.
                ``model.trainable_variables``; each must be in exactly one group.

        Raises:
            ValueError: naming the variables in no group, or group variables not in ``var_list``.
        """
        var_list = list(var_list)
        given = {id(v) for v in var_list}
        uncovered = [v for v in var_list if id(v) not in self._group_of]
        if uncovered:
            raise ValueError("trainable variables in no learning-rate group: "
                             f"{_preview(_names(uncovered))}")
        foreign = [v for vs in self._group_variables.values() for v in vs if id(v) not in given]
        if foreign:
            raise ValueError("learning-rate group variables that are not being trained: "
                             f"{_preview(_names(foreign))}")
        for group, optimizer in self.optimizers.items():
            optimizer.build(self._group_variables[group])
        super().build(var_list)

    @property
    def variables(self):
        own = super().variables
        return own + [v for opt in self.optimizers.values() for v in opt.variables]

    def apply(self, grads, trainable_variables=None):
        """Splits ``(grads, variables)`` by group and lets each group's optimiser apply its part.

        Args:
            grads: gradients, one per variable (None for a variable without one).
            trainable_variables: the variables; those given to ``build`` when omitted.
        """
        if trainable_variables is None:
            trainable_variables = self._trainable_variables
        trainable_variables = list(trainable_variables)
        if not self.built:
            self.build(trainable_variables)
        parts = {group: ([], []) for group in self.optimizers}
        for grad, variable in zip(grads, trainable_variables):
            group = self._group_of.get(id(variable))
            if group is None:
                raise ValueError(f"variable {_names([variable])[0]} is in no learning-rate group")
            parts[group][0].append(grad)
            parts[group][1].append(variable)
        for group, (group_grads, group_vars) in parts.items():
            if group_vars:  # an empty group (e.g. nothing restored with --init=none) skips
                self.optimizers[group].apply(group_grads, group_vars)
        self._iterations.assign_add(1)

    def get_config(self):
        raise NotImplementedError("MultiOptimizer holds variable groups and is not serialisable; "
                                  "rebuild it with optimizers.make_optimizer")


def make_group_optimizer(learning_rate,
                         train_config: config.TrainConfig) -> keras.optimizers.Optimizer:
    """The optimiser of one group (``config.TrainConfig.optimizer``), at ``learning_rate``.

    Args:
        learning_rate: the group's learning rate, a float or a ``GroupSchedule``.
        train_config: names the optimiser and its constants.

    Returns:
        A fresh Keras optimiser; create it inside the distribution strategy's scope.
    """
    if train_config.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate=learning_rate,
                                     beta_1=train_config.adam_beta_1,
                                     beta_2=train_config.adam_beta_2,
                                     epsilon=train_config.adam_epsilon)
    if train_config.optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate=learning_rate,
                                    momentum=train_config.sgd_momentum, nesterov=True)
    raise ValueError(f"unknown optimizer {train_config.optimizer!r}; allowed: adam, sgd")


def make_optimizer(variables: Sequence, groups: Mapping[str, Sequence],
                   train_config: config.TrainConfig,
                   loss_scaling: bool = False) -> keras.optimizers.Optimizer:
    """The training optimiser: one optimiser per learning-rate group, wrapped, built.

    Args:
        variables: every variable to train, e.g. ``model.trainable_variables``.
        groups: ``{"finetune": variables, "new": variables}``; together exactly ``variables``,
            each in one group (checked: ValueError names the strays).
        train_config: learning rates (``lr_finetune``, ``lr_new``), their schedule and the
            optimiser's constants.
        loss_scaling: wrap in ``keras.optimizers.LossScaleOptimizer`` (float16 training).

    Returns:
        A built ``MultiOptimizer``, or a built ``LossScaleOptimizer`` around one. Create it inside
        the distribution strategy's scope, so that slot variables are mirrored.
    """
    rates = {FINETUNE: train_config.lr_finetune, NEW: train_config.lr_new}
    unknown = set(groups) - set(rates)
    if unknown:
        raise ValueError(f"unknown learning-rate groups {sorted(unknown)}; allowed: {GROUPS}")
    schedules = ({g: group_schedule(rates[g], train_config) for g in GROUPS}
                 if uses_schedule(train_config) else {})
    optimizer = MultiOptimizer(
        {g: make_group_optimizer(schedules.get(g, rates[g]), train_config) for g in GROUPS},
        {g: list(groups.get(g, ())) for g in GROUPS}, schedules=schedules)
    if loss_scaling:
        optimizer = keras.optimizers.LossScaleOptimizer(
            optimizer, initial_scale=train_config.loss_scale_initial,
            dynamic_growth_steps=train_config.loss_scale_growth_steps)
    optimizer.build(list(variables))
    return optimizer


def multi_optimizer(optimizer: keras.optimizers.Optimizer) -> MultiOptimizer:
    """The ``MultiOptimizer`` inside ``optimizer`` (itself, or the one a loss-scale wraps)."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    if not isinstance(inner, MultiOptimizer):
        raise TypeError(f"{optimizer!r} is not a MultiOptimizer or a LossScaleOptimizer around one")
    return inner
