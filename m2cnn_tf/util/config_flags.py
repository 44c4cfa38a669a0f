"""Command-line flags generated from the config dataclasses, and the config built back from them.

A field made with ``config.setting(default, help_text, choices)`` is a flag: its name, type and
default come from the field, its help text and allowed values from the field's metadata. A
script defines them with ``define_flags`` and, after absl has parsed the command line, rebuilds
the dataclass with ``config_from_flags``, so a new setting is one edit (the field) and no script
copies flags into fields by hand.

Types: ``int``, ``float``, ``str`` (an enum when the field lists its choices), ``bool``, their
``Optional[...]`` (default None) and ``tuple[X, ...]`` of int/float/str (a comma-separated list).

``config_from_flags(..., base=other)`` starts from another config (a named preset, say) and takes
from the command line only the flags given explicitly: a flag given on the command line wins even
when it repeats the flag's default, and a flag left out keeps the base's value.
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
import types
import typing
from typing import Any, Dict, List, Mapping, Optional, Sequence

from absl import flags

from m2cnn_tf.config import FLAG_CHOICES, FLAG_HELP

# How a list flag's elements are named in the message for a value that does not convert.
_ELEMENT_WORDS = {int: "integers", float: "numbers", str: "text"}


@dataclasses.dataclass(frozen=True)
class _FlagField:
    """One flag of a config dataclass: its field, what absl stores and what the field holds."""

    name: str
    kind: type  # bool, int, float or str (of the value, or of each element of a tuple)
    is_tuple: bool
    help: str
    choices: tuple


def _unwrap_optional(hint):
    """X for Optional[X] (X | None), else the hint itself."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def _flag_field(field: dataclasses.Field, hint, config_class: type) -> _FlagField:
    hint = _unwrap_optional(hint)
    is_tuple = typing.get_origin(hint) is tuple
    if is_tuple:
        args = typing.get_args(hint)
        if len(args) != 2 or args[1] is not Ellipsis:
            raise TypeError(f"{config_class.__name__}.{field.name}: a flag's tuple must be "
                            f"tuple[X, ...], got {hint}")
        hint = args[0]
    if hint not in (bool, int, float, str) or (is_tuple and hint is bool):
        raise TypeError(f"{config_class.__name__}.{field.name}: no flag type for {hint} (expected "
                        "bool, int, float, str or tuple[int|float|str, ...])")
    choices = tuple(field.metadata.get(FLAG_CHOICES, ()))
    if choices and (hint is not str or is_tuple):
        raise TypeError(f"{config_class.__name__}.{field.name}: choices need a str field")
    return _FlagField(field.name, hint, is_tuple, field.metadata[FLAG_HELP], choices)


def flag_fields(config_class: type, exclude: Sequence[str] = ()) -> List[_FlagField]:
    """The fields of a config dataclass that are flags (they carry help text), minus ``exclude``.

    Raises:
      TypeError: a flag field of a type no flag can hold.
      ValueError: ``exclude`` names a field that is not a flag.
    """
    hints = typing.get_type_hints(config_class)
    fields = [f for f in dataclasses.fields(config_class) if FLAG_HELP in f.metadata]
    unknown = set(exclude) - {f.name for f in fields}
    if unknown:
        raise ValueError(f"exclude names fields that are not flags of {config_class.__name__}: "
                         f"{', '.join(sorted(unknown))}")
    return [_flag_field(f, hints[f.name], config_class) for f in fields if f.name not in exclude]


def _format(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _caller_module_name() -> str:
    """The module that called into this one, named as absl names it (the script's path for
    ``__main__``), so that ``--help`` lists generated flags under the script that asked for
    them."""
    frame = inspect.currentframe()
    while frame is not None and frame.f_globals.get("__name__") == __name__:
        frame = frame.f_back
    name = frame.f_globals.get("__name__", "") if frame is not None else ""
    return sys.argv[0] if name == "__main__" else name


def define_flags(
    config_class: type,
    defaults: Any,
    exclude: Sequence[str] = (),
    overrides: Optional[Mapping[str, str]] = None,
    flag_values: flags.FlagValues = flags.FLAGS,
) -> List[str]:
    """Defines one absl flag per flag field of ``config_class``.

    Args:
      config_class: a dataclass whose flag fields are made with ``config.setting``.
      defaults: an instance of it; its values are the flags' defaults.
      exclude: fields this script does not offer as flags.
      overrides: {field: help text} replacing the field's own help text in this script.
      flag_values: the absl registry (absl's global FLAGS; tests pass their own).

    Returns:
      The names of the flags defined.

    Raises:
      TypeError: ``defaults`` is not a ``config_class``, or a flag field has a type no flag can
        hold.
      ValueError: ``exclude`` or ``overrides`` name a field that is not a flag.
    """
    if not isinstance(defaults, config_class):
        raise TypeError(f"defaults must be a {config_class.__name__}, got "
                        f"{type(defaults).__name__}")
    overrides = dict(overrides or {})
    fields = flag_fields(config_class, exclude)
    unknown = set(overrides) - {f.name for f in fields}
    if unknown:
        raise ValueError(f"overrides name fields that are not flags here: "
                         f"{', '.join(sorted(unknown))}")
    module_name = _caller_module_name()
    for field in fields:
        default = getattr(defaults, field.name)
        common = dict(flag_values=flag_values, module_name=module_name)
        help_text = overrides.get(field.name, field.help)
        if field.is_tuple:
            flags.DEFINE_list(field.name, [_format(v) for v in default], help_text, **common)
        elif field.choices:
            flags.DEFINE_enum(field.name, default, list(field.choices), help_text, **common)
        elif field.kind is bool:
            flags.DEFINE_boolean(field.name, default, help_text, **common)
        elif field.kind is int:
            flags.DEFINE_integer(field.name, default, help_text, **common)
        elif field.kind is float:
            flags.DEFINE_float(field.name, default, help_text, **common)
        else:
            flags.DEFINE_string(field.name, default, help_text, **common)
    return [f.name for f in fields]


def given(name: str, flag_values: flags.FlagValues = flags.FLAGS) -> bool:
    """Whether a flag was set: given on the command line (even to its default value), assigned
    in code, or holding a value other than its default."""
    flag = flag_values[name]
    return bool(flag.present) or not flag.using_default_value or flag.value != flag.default


def _field_value(field: _FlagField, value: Any) -> Any:
    """A flag's value as the field holds it (a list flag's strings converted to a tuple)."""
    if not field.is_tuple or value is None:
        return value
    try:
        return tuple(field.kind(v) for v in value)
    except ValueError:
        raise ValueError(f"--{field.name} must be {_ELEMENT_WORDS[field.kind]}, got "
                         f"{','.join(map(str, value))}") from None


def config_from_flags(
    config_class: type,
    defaults: Any,
    base: Any = None,
    exclude: Sequence[str] = (),
    flag_values: flags.FlagValues = flags.FLAGS,
) -> Any:
    """The config of the command line, after absl has parsed it.

    Args:
      config_class: the dataclass given to ``define_flags``.
      defaults: the instance given to ``define_flags``.
      base: the config to start from (e.g. a named preset); None: ``defaults``. Each flag
        field takes the flag's value only when the flag was given (``given``), so a preset's
        values stand unless the command line names the flag, and a flag named on the command
        line wins even when it repeats its default.
      exclude: the ``exclude`` given to ``define_flags``.
      flag_values: the absl registry given to ``define_flags``.

    Returns:
      A ``config_class`` instance.

    Raises:
      ValueError: a list flag whose elements do not convert (``--resolutions must be integers,
        got 224,x``).
    """
    base = defaults if base is None else base
    for instance, what in ((defaults, "defaults"), (base, "base")):
        if not isinstance(instance, config_class):
            raise TypeError(f"{what} must be a {config_class.__name__}, got "
                            f"{type(instance).__name__}")
    changes: Dict[str, Any] = {}
    for field in flag_fields(config_class, exclude):
        if given(field.name, flag_values):
            changes[field.name] = _field_value(field, flag_values[field.name].value)
    return dataclasses.replace(base, **changes)
