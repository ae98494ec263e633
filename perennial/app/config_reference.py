"""The configuration reference, rendered from the config models themselves (the docs' hook calls it), so
that a key, its type, default and description are written once: in `perennial.core.config`."""

from __future__ import annotations

import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import AliasChoices, BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from perennial.core.config import PipelineConfig, Settings

NO_DESCRIPTION = "-"
# The bounds pydantic keeps in a field's metadata (annotated_types), by attribute, as a reader writes them.
_BOUNDS = (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="), ("min_length", "items >="),
           ("max_length", "items <="))


def type_name(annotation: Any) -> str:
    """A field's type as a reader of YAML sees it: `float | null`, `auto | csv | parquet`."""
    origin, args = get_origin(annotation), get_args(annotation)
    if annotation is type(None):
        return "null"
    if origin is Literal:
        return " | ".join(str(arg) for arg in args)
    if origin in (Union, types.UnionType):
        return " | ".join(type_name(arg) for arg in args)
    if origin is not None:
        return f"{getattr(origin, '__name__', origin)}[{', '.join(type_name(arg) for arg in args)}]"
    if annotation is SecretStr:
        return "str (secret)"
    if annotation is Path:
        return "path"
    return getattr(annotation, "__name__", None) or str(annotation)


def constraints(field: FieldInfo) -> list[str]:
    """The field's bounds and pattern, e.g. `>= 0`, `<= 1`."""
    found = []
    for item in field.metadata:
        found += [f"{sign} {getattr(item, attr)}" for attr, sign in _BOUNDS
                  if getattr(item, attr, None) is not None]
        if getattr(item, "pattern", None):
            found.append(f"pattern `{item.pattern}`")
    return found


def value_text(value: Any) -> str:
    """A value as it would be written in YAML (or in an environment variable)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(value_text(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {value_text(item)}" for key, item in value.items()) + "}"
    return str(value)


def default_text(field: FieldInfo) -> str:
    """The default cell: `required`, `unset` for a None default, else the value in code."""
    if field.is_required():
        return "required"
    value = field.default_factory() if field.default_factory is not None else field.default
    if value is None or value is PydanticUndefined:
        return "unset"
    return f"`{value_text(value)}`"


def _escape(text: str) -> str:
    """A cell's text with its pipes escaped outside code spans (inside them a pipe is literal)."""
    parts = text.replace("\n", " ").split("`")
    return "`".join(part.replace("|", "\\|") if i % 2 == 0 else part for i, part in enumerate(parts))


def description_text(field: FieldInfo, name: str | None = None) -> str:
    """The field's description (`-` without one); given the key's name, with the other names the key is
    also read under (`validation_alias`)."""
    text = field.description or NO_DESCRIPTION
    alias = field.validation_alias
    others = [c for c in alias.choices if c != name] if name and isinstance(alias, AliasChoices) else []
    if others:
        text += " Also read as " + ", ".join(f"`{other}`" for other in others) + "."
    return _escape(text)


def type_text(field: FieldInfo) -> str:
    bounds = constraints(field)
    return f"`{type_name(field.annotation)}`" + (f" ({', '.join(bounds)})" if bounds else "")


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds: itself (a section) or as the values of a mapping (`dict[str, Model]`)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) is dict:
        value = get_args(annotation)[-1]
        return value if isinstance(value, type) and issubclass(value, BaseModel) else None
    return None


def sections(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, type[BaseModel]]]:
    """(dotted prefix, model) of the model and of every model inside it, depth first: a section's
    key is `policy.`, a mapping's values are `validation.columns.<column>.`."""
    yield prefix, model
    for name, field in model.model_fields.items():
        inner = _model_in(field.annotation)
        if inner is None or field.exclude:
            continue
        is_section = inner is field.annotation
        placeholder = "" if is_section else f"<{name.removesuffix('s')}>."
        yield from sections(inner, f"{prefix}{name}.{placeholder}")


def rows(model: type[BaseModel], prefix: str) -> list[tuple[str, FieldInfo, str]]:
    """(dotted key, field, name) of a model's own keys: not excluded, not a section of their own."""
    return [(f"{prefix}{name}", field, name) for name, field in model.model_fields.items()
            if not field.exclude and _model_in(field.annotation) is not field.annotation]


def table(entries: list[tuple[str, FieldInfo, str]], first: str = "key") -> str:
    """A Markdown table of (first cell, field, description) entries."""
    lines = [f"| {first} | type | default | description |", "|---|---|---|---|"]
    lines += [f"| {key} | {type_text(field)} | {default_text(field)} | {about} |"
              for key, field, about in entries]
    return "\n".join(lines)


def render_config_reference(root: type[BaseModel] = PipelineConfig, level: int = 3) -> str:
    """One table per section of the config file: key (dotted), type, default, description."""
    parts = []
    for prefix, model in sections(root):
        entries = [(f"`{key}`", field, description_text(field, name))
                   for key, field, name in rows(model, prefix)]
        if not entries:
            continue
        title = f"`{prefix.rstrip('.')}`" if prefix else "Top level"
        about = (model.__doc__ or "").strip() if model.__doc__ != BaseModel.__doc__ else ""
        parts.append("\n\n".join(p for p in (f"{'#' * level} {title}", about, table(entries)) if p))
    return "\n\n".join(parts) + "\n"


def env_names(field: FieldInfo, name: str, prefix: str) -> list[str]:
    """The environment variables a setting is read from."""
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        return [str(choice).upper() for choice in alias.choices]
    return [str(alias).upper()] if isinstance(alias, str) else [f"{prefix}{name}".upper()]


def render_settings_reference(settings: type[BaseModel] = Settings) -> str:
    """The environment variables of the infrastructure settings: variable, type, default, description."""
    prefix = settings.model_config.get("env_prefix", "")
    entries = []
    for name, field in settings.model_fields.items():
        if not field.exclude:
            variables = " or ".join(f"`{env}`" for env in env_names(field, name, prefix))
            entries.append((variables, field, description_text(field)))
    return table(entries, first="variable") + "\n"
