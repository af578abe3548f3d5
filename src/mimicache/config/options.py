"""Options declared once: a dataclass field carries its default, its type and its help text,
and the command-line flag that sets it (``Flag``). Commands generate their flags from the
fields, so an option and its default are written in one place. No torch, no argparse."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from dataclasses import MISSING, dataclass
from typing import Any

_FLAG = "mimicache.flag"
_NESTED = "mimicache.nested"


@dataclass(frozen=True)
class Flag:
    """The command-line face of one option field. A bool field is a ``store_true`` flag;
    ``invert``: the flag turns a default-on field off (``--disable_feature_cache``).
    ``type`` parses the text and raises ``ValueError`` with a one-line reason; ``many``: the
    flag takes one or more values."""

    name: str  # "--decode_chunk_size"
    help: str
    choices: tuple[str, ...] | None = None
    type: Callable[[str], Any] | None = None
    metavar: str | None = None
    dest: str | None = None  # the parsed value's name; default: the flag without dashes
    invert: bool = False
    many: bool = False  # one or more values (each parsed by ``type``), a tuple

    @property
    def key(self) -> str:
        return self.dest or self.name.lstrip("-")


@dataclass(frozen=True)
class FlagField:
    """A flag with the field it sets: ``path`` the field names from the options object
    down (``("scheduler", "sigma_min")``), ``default`` the field's default."""

    path: tuple[str, ...]
    flag: Flag
    default: Any
    is_bool: bool


def option(default: Any = MISSING, *, flag: Flag | None = None, help: str = "", **kw: Any):
    """A dataclass field with its default, its help, and the flag that sets it (if any)."""
    metadata = {"help": flag.help if flag is not None else help}
    if flag is not None:
        metadata[_FLAG] = flag
    if callable(default) and isinstance(default, type):
        return dataclasses.field(default_factory=default, metadata=metadata | {_NESTED: True}, **kw)
    return dataclasses.field(default=default, metadata=metadata, **kw)


def flag_fields(cls: type, prefix: tuple[str, ...] = ()) -> Iterator[FlagField]:
    """Every flag of the options class ``cls``, nested option classes included, in order."""
    for f in dataclasses.fields(cls):
        if f.metadata.get(_NESTED):
            yield from flag_fields(f.default_factory, (*prefix, f.name))  # type: ignore[misc]
        elif _FLAG in f.metadata:
            default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
            yield FlagField(
                (*prefix, f.name), f.metadata[_FLAG], default, isinstance(default, bool)
            )


def field_values(cls: type, values: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments of ``cls`` from parsed flag values (keyed by ``Flag.key``);
    flags absent from ``values`` leave their field at its default."""
    out: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for f in dataclasses.fields(cls):
        if f.metadata.get(_NESTED):
            nested[f.name] = field_values(f.default_factory, values)  # type: ignore[arg-type]
            out[f.name] = f.default_factory(**nested[f.name])  # type: ignore[misc]
        elif _FLAG in f.metadata and f.metadata[_FLAG].key in values:
            flag: Flag = f.metadata[_FLAG]
            value = values[flag.key]
            out[f.name] = (not value) if flag.invert else value
    return out
