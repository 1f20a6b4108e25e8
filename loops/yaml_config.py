"""Reading a pydantic config from YAML and ``key=value`` overrides, every mistake reported at once.

    cfg = load_with(schema, "configs/demo.yaml", ["rounds=2"])

A `Schema` names a loop's pydantic model, the rules between its values, and
the words its errors use; `load_with` reads a file, applies overrides (each
value read as YAML: ``eval_ks=[1,5]``, ``max_problems=null``), and raises one
`UserError` listing unknown keys (with the closest known one), values of the
wrong type (with an example of the right one) and broken rules. `Int`,
`Float` and `Text` are strict types with the few conversions YAML makes
necessary. Every loop's config (`loops.config`, `loops.grpo_config`,
`loops.rlcoder_config`, ...) is read through here.
"""
from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Callable, Literal, Mapping, Sequence, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, BeforeValidator, ValidationError

from codegen.errors import UserError


def _whole_number(v: Any) -> Any:
    return int(v) if isinstance(v, float) and v.is_integer() else v  # 2.0 steps are 2 steps


def _number_text(v: Any) -> Any:
    # YAML 1.1 reads "5e-4" (no dot) as a string; accept it as the number it is.
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            pass  # pydantic reports it
    return v


def _text(v: Any) -> Any:
    return str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v  # name: 2024


# Strict types (a bool is not a number, a number is not a bool) with the few
# conversions YAML makes necessary.
Int = Annotated[int, BeforeValidator(_whole_number)]
Float = Annotated[float, BeforeValidator(_number_text)]
Text = Annotated[str, BeforeValidator(_text)]


def _type_name(annotation: Any) -> str:
    """``int``, ``int or null``, ``list of int``: the field's type as an error shows it."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return _type_name(args[0])
    if origin in (Union, UnionType):
        named = [_type_name(a) for a in args if a is not type(None)]
        return " or ".join(named) + (" or null" if type(None) in args else "")
    if origin is Literal:
        return " or ".join(json.dumps(a) for a in args)
    if origin is list:
        return f"list of {_type_name(args[0])}"
    if origin is dict:
        return f"mapping of {_type_name(args[0])} to {_type_name(args[1])}"
    return getattr(annotation, "__name__", str(annotation))


@dataclass(frozen=True)
class Schema:
    """How one loop's config is read and checked: its model, its rules, and the words its errors use."""

    model: type[BaseModel]
    rules: Callable[[Any], list[str]]  # every rule between values a config breaks, each with its fix
    label: str  # "invalid <label> config: ..."
    example_file: str  # named when the config file is missing
    example_override: str  # shown when an override is not key=value
    replaced: Mapping[str, str] = field(default_factory=dict)  # keys earlier configs had -> what to write instead

    @property
    def fields(self) -> dict[str, Any]:
        return self.model.model_fields


def _type_errors(schema: Schema, error: ValidationError, values: dict[str, Any]) -> dict[str, str]:
    """One message per key pydantic refused, naming the type wanted and an example of it."""
    out: dict[str, str] = {}
    for e in error.errors():
        key = str(e["loc"][0])
        if key in out:
            continue
        value = values.get(key)
        field_ = schema.fields[key]
        example = f"e.g. {key}={json.dumps(field_.default)}"
        if value is None:
            out[key] = f"config key {key!r} may not be null; give a {_type_name(field_.annotation)}, {example}"
        else:
            out[key] = (f"config key {key!r} must be of type {_type_name(field_.annotation)}, got {value!r} "
                        f"({type(value).__name__}); {example}")
    return out


def _unknown_key(schema: Schema, key: str, where: str) -> str:
    if key in schema.replaced:
        return f"config key {key!r} in {where} is no longer used: {schema.replaced[key]}"
    close = difflib.get_close_matches(key, schema.fields, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown config key {key!r} in {where}{hint}; known keys: {', '.join(schema.fields)}"


def _parse_overrides(schema: Schema, overrides: list[str], errors: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            errors.append(f"override {item!r} is not key=value; write it as e.g. {schema.example_override}")
        elif key not in schema.fields:
            errors.append(_unknown_key(schema, key, "the command-line overrides"))
        else:
            try:
                out[key] = yaml.safe_load(raw) if raw.strip() else ""
            except yaml.YAMLError as e:
                errors.append(f"override {item!r}: the value is not valid YAML ({e.__class__.__name__}); quote it")
    return out


def _build(schema: Schema, values: dict[str, Any], errors: list[str]) -> BaseModel:
    """The config of ``values`` (known keys only); type errors and broken rules go to ``errors``.

    A value of the wrong type is left at its default for the rules, so one run
    reports both kinds of mistake.
    """
    try:
        cfg = schema.model(**values)
    except ValidationError as e:
        bad = _type_errors(schema, e, values)
        errors.extend(bad.values())
        cfg = schema.model(**{k: v for k, v in values.items() if k not in bad})
    errors.extend(schema.rules(cfg))
    return cfg


def _read_file(schema: Schema, path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"config file {str(p)!r} does not exist; pass --config PATH to a YAML file "
                        f"(see {schema.example_file})")
    try:
        loaded = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise UserError(f"config file {str(p)!r} is not valid YAML: {e}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise UserError(f"config file {str(p)!r} must be a YAML mapping of key: value, got a {type(loaded).__name__}")
    return loaded


def defaults_of(model: type[BaseModel]) -> dict[str, Any]:
    """Every key of ``model`` at its default: what a run made before a key existed ran with (`RunDir.open`)."""
    return model.model_construct().model_dump()


def load_with(schema: Schema, path: str | Path | None, overrides: Sequence[str] = ()) -> Any:
    """Read ``path`` (YAML mapping; None = all defaults), apply ``key=value`` overrides, validate
    against ``schema``'s model and rules.

    Raises one `UserError` listing every mistake: unknown keys, values of the
    wrong type, and broken rules.
    """
    errors: list[str] = []
    values: dict[str, Any] = {}
    if path is not None:
        for key, value in _read_file(schema, path).items():
            if str(key) in schema.fields:
                values[str(key)] = value
            else:
                errors.append(_unknown_key(schema, str(key), str(path)))
    values.update(_parse_overrides(schema, list(overrides), errors))
    cfg = _build(schema, values, errors)
    if errors:
        raise UserError(f"invalid {schema.label} config: " + "; ".join(errors))
    return cfg


def parse_overrides_with(schema: Schema, overrides: Sequence[str]) -> dict[str, Any]:
    """``["steps=2", "eval_ks=[1,5]"]`` -> ``{"steps": 2, "eval_ks": [1, 5]}``, keys checked against ``schema``."""
    errors: list[str] = []
    out = _parse_overrides(schema, list(overrides), errors)
    if errors:
        raise UserError(f"invalid {schema.label} config: " + "; ".join(errors))
    return out
