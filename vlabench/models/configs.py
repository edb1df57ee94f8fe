"""Model configs: the one preset mechanism, and dataclasses built from plain dicts (TOML, JSON).

Presets resolve lazily. A config keeps the fields it was not given as ``None`` and
:meth:`PresetConfig.resolved` fills them from ``PRESETS[preset]`` when the model is built, so
changing only ``preset`` (``--model.preset small`` on the command line, or a recipe) changes every
field the user did not set. Validation runs on the resolved values at construction, so a bad value
fails when the recipe or command line is parsed, not when training starts.
"""

from __future__ import annotations

import copy
import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar


@dataclass
class PresetConfig:
    """Base of every model config: ``preset`` names a row of the class's ``PRESETS``."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}
    TUPLE_FIELDS: ClassVar[tuple[str, ...]] = ()
    """Fields TOML/JSON deliver as lists that the model wants as tuples."""

    preset: str = "base"
    """Size preset filling every field left unset (None); see the family's PRESETS."""

    def __post_init__(self) -> None:
        self.validate(self.resolved())

    def resolved(self):
        """A copy with every None field filled from the preset (what the model is built from)."""
        if self.preset not in self.PRESETS:
            raise ValueError(f"unknown preset {self.preset!r} ({type(self).__name__}); known: {', '.join(self.PRESETS)}")
        out = copy.copy(self)
        for key, value in self.PRESETS[self.preset].items():
            if getattr(out, key) is None:
                setattr(out, key, value)
        for key in self.TUPLE_FIELDS:
            if getattr(out, key) is not None:
                setattr(out, key, tuple(getattr(out, key)))
        return out

    def validate(self, r: "PresetConfig") -> None:
        """Raise ValueError on bad values of the resolved config ``r`` (override per family)."""

    def for_loading(self):
        """The config to build a model whose weights a checkpoint will replace: families turn off
        pretrained initializations here (so loading needs no weight files besides the checkpoint's)."""
        return self


def _field_types(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # unresolvable annotations: fall back to passing values through unchanged
        return {}


def _coerce(tp: Any, value: Any, where: str) -> Any:
    """Turn JSON/TOML values (dicts, lists, str) into what annotation ``tp`` asks for."""
    origin = typing.get_origin(tp)
    if origin is Annotated:
        return _coerce(typing.get_args(tp)[0], value, where)
    if dataclasses.is_dataclass(tp) and isinstance(value, dict):
        return config_from_dict(tp, value, where)
    if (tp is tuple or origin is tuple) and isinstance(value, list):
        return tuple(value)
    if tp is Path and isinstance(value, str):
        return Path(value)
    return value


def config_from_dict(cls: type, data: dict[str, Any], where: str = "config") -> Any:
    """Build dataclass ``cls`` from a plain dict (a TOML table or JSON object), recursively.

    Raises:
        ValueError: naming ``where`` (e.g. the recipe file and table), the unknown key and the valid keys.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    valid = [f.name for f in dataclasses.fields(cls) if f.init]
    derived = {f.name for f in dataclasses.fields(cls) if not f.init}
    data = {k: v for k, v in data.items() if k not in derived}  # init=False fields are recomputed, not read
    unknown = [k for k in data if k not in valid]
    if unknown:
        raise ValueError(
            f"{where}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} "
            f"for {cls.__name__}; valid keys: {', '.join(valid)}"
        )
    types = _field_types(cls)
    kwargs = {k: _coerce(types.get(k), v, f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ValueError(f"{where}: {e}") from None


def to_jsonable(obj: Any) -> Any:
    """Dataclasses/Paths/tuples/numpy scalars -> JSON-compatible values (bytes keys decoded, bytes values
    shown as their length: what a msgpack frame from another program may hold)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {(k.decode(errors="replace") if isinstance(k, bytes) else str(k)): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, bytes):
        return f"<{len(obj)} bytes>"
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist") and hasattr(obj, "dtype"):  # numpy scalars and arrays
        return obj.tolist()
    return obj
