"""Scenario errors: :class:`ScenarioError` and the formatting of pydantic's errors into one line
per problem with the file, the key path (``devices[2].availability.kind``) and what is allowed."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from vip_ray.errors import UserError
from vip_ray.scenario.schema.base import AVAILABILITY_KINDS


class ScenarioError(UserError, ValueError):
    """A scenario, catalog entry, trace or override that cannot be used.

    ``file`` is the offending file (or ``None``), ``problems`` a list of ``(key_path, message)``.
    The message is human-readable and never a pydantic dump.
    """

    def __init__(self, message: str, *, file: str | None = None,
                 problems: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.file = file
        self.problems = list(problems or [])


_TYPE_WORDS = {
    "int": "an integer", "float": "a number", "bool": "true or false", "string": "a string",
    "list": "a list", "dict": "a mapping (key: value)", "model": "a mapping (key: value)",
    "tuple": "a list", "model_attributes": "a mapping (key: value)",
}


def _expected_list(text: str) -> str:
    return text.replace("'", "").replace(" or ", ", ")


def path_of(loc: tuple, sub: str | None = None) -> str:
    """``('devices', 2, 'availability', 'onoff', 'mode')`` -> ``devices[2].availability.mode``."""
    out = ""
    prev: Any = None
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif prev == "availability" and part in AVAILABILITY_KINDS:
            pass  # discriminated-union tag, not a key
        else:
            out += ("." if out else "") + str(part)
        prev = part
    if sub:
        out += sub if sub.startswith("[") else ("." if out else "") + sub
    return out


def _got(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def _describe(err: dict[str, Any]) -> tuple[str, str]:
    """(key path, message) of one pydantic error."""
    t, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    loc = tuple(err["loc"])
    sub = ctx.get("sub")
    if t == "missing":
        if loc and isinstance(loc[-1], int):
            return path_of(loc[:-1]), f"too few items (item {loc[-1]} is missing)"
        return path_of(loc), "required key missing"
    if t == "extra_forbidden":
        return path_of(loc), "unknown key"
    if t == "literal_error":
        return path_of(loc), f"invalid value {value!r}; allowed: {_expected_list(ctx.get('expected', ''))}"
    if t in ("union_tag_invalid", "union_tag_not_found"):
        allowed = _expected_list(ctx.get("expected_tags") or ", ".join(AVAILABILITY_KINDS))
        what = f"invalid value {ctx.get('tag')!r}" if t == "union_tag_invalid" else "required key missing"
        return path_of(loc, "kind"), f"{what}; allowed: {allowed}"
    if t.endswith("_type") or t.endswith("_parsing") or t in ("int_from_float", "model_attributes_type"):
        stem = t.split("_")[0] if not t.startswith("model_attributes") else "model_attributes"
        word = _TYPE_WORDS.get(stem)
        if word:
            return path_of(loc), f"expected {word}, got {_got(value)}"
    bounds = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
    if t in bounds:
        limit = next(v for k, v in ctx.items() if k in ("gt", "ge", "lt", "le"))
        return path_of(loc), f"must be {bounds[t]} {limit}, got {value!r}"
    if t == "finite_number":
        return path_of(loc), f"must be a finite number, got {value!r}"
    if t == "too_short":
        return path_of(loc), f"needs at least {ctx.get('min_length')} item(s), got {value!r}"
    if t == "too_long":
        return path_of(loc), f"takes at most {ctx.get('max_length')} item(s), got {_got(value)}"
    msg = err.get("msg", t)
    msg = msg.removeprefix("Value error, ")
    return path_of(loc, sub), msg


def format_validation_error(exc: ValidationError, *, file: str | None,
                            overrides: dict[str, str] | None = None, limit: int = 12) -> ScenarioError:
    """A :class:`ScenarioError` listing every problem as ``file: key.path: message``."""
    problems: list[tuple[str, str]] = []
    for err in exc.errors(include_url=False):
        path, msg = _describe(err)
        for opath, text in (overrides or {}).items():
            if path == opath or path.startswith(opath + ".") or path.startswith(opath + "[") \
                    or opath.startswith(path + ".") or opath.startswith(path + "["):
                msg += f" (set by override {text!r})"
                break
        if (path, msg) not in problems:
            problems.append((path, msg))
    where = file or "<scenario>"
    lines = [f"{where}: {p}: {m}" if p else f"{where}: {m}" for p, m in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"... and {len(problems) - limit} more")
    head = lines[0] if len(lines) == 1 else f"{where}: {len(problems)} problems\n  " + "\n  ".join(lines)
    return ScenarioError(head, file=file, problems=problems)


def validate(model: type[BaseModel], data: Any, *, file: str | None, context: dict[str, Any] | None = None,
             overrides: dict[str, str] | None = None) -> Any:
    """``model.model_validate(data)`` with errors as :class:`ScenarioError`."""
    try:
        return model.model_validate(data, context=context)
    except ValidationError as e:
        raise format_validation_error(e, file=file, overrides=overrides) from None
