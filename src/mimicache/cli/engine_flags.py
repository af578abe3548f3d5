"""Flags generated from the options objects (``engine.spec.EngineSpec``): each engine option
is declared once, with its default and help, and becomes the same flag in every command."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from mimicache.config import InferenceConfig
from mimicache.config.options import FlagField, field_values, flag_fields
from mimicache.engine.spec import EngineSpec

ENGINE_FLAGS: tuple[FlagField, ...] = tuple(flag_fields(EngineSpec))


def add_engine_flags(
    group: Any,
    fields: Iterable[str],
    *,
    defaults: Mapping[str, Any] | None = None,
    help_values: Mapping[str, Any] | None = None,
) -> None:
    """The flags of the spec's ``fields`` (a nested options field gives all of its flags).
    ``defaults``: a command's own flag defaults by flag key; ``help_values`` fill the
    ``{name}`` placeholders of the helps (a default the command applies after the config's)."""
    defaults = dict(defaults or {})
    wanted = set(fields)
    for item in ENGINE_FLAGS:
        if item.path[0] not in wanted:
            continue
        flag = item.flag
        text = flag.help.format(**(help_values or {})) if "{" in flag.help else flag.help
        kwargs: dict[str, Any] = {"dest": flag.key, "help": text}
        if item.is_bool:
            kwargs["action"] = "store_true"
        else:
            kwargs["default"] = defaults.get(flag.key, item.default)
            if flag.choices is not None:
                kwargs["choices"] = flag.choices
            if flag.type is not None:
                kwargs["type"] = _usage_errors(flag.type)
            if flag.metavar is not None:
                kwargs["metavar"] = flag.metavar
            if flag.many:
                kwargs["nargs"] = "+"
        group.add_argument(flag.name, **kwargs)


def engine_spec(args: argparse.Namespace, config: InferenceConfig, **changes: Any) -> EngineSpec:
    """The spec the parsed flags describe (flags a command does not have keep their
    defaults); ``changes`` set fields no flag sets."""
    values = field_values(EngineSpec, vars(args))
    many = {item.path[0] for item in ENGINE_FLAGS if item.flag.many}
    values = {k: tuple(v) if k in many and isinstance(v, list) else v for k, v in values.items()}
    return EngineSpec(config, **(values | changes))


def _usage_errors(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """``parse`` with its ``ValueError`` as a usage error that keeps the reason."""

    def checked(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    checked.__name__ = getattr(parse, "__name__", "value")
    return checked
