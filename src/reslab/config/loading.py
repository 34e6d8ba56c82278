"""Loading the run config: YAML recipe + ``key=value`` overrides -> a validated ``TrainConfig``,
with errors that name the key, the received value and the allowed ones; and saving it.
"""

from __future__ import annotations

import difflib
import os
from typing import Any, Mapping, Sequence

import yaml
from pydantic import BaseModel, ValidationError

from ..errors import ConfigError
from ..recipes import resolve_recipe
from .schema import TrainConfig


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(
            f"override {item!r} is not key=value; write e.g. optim.lr=0.05 or schedule.name=step."
        )
    key, raw = item.split("=", 1)
    key = key.strip().lstrip("-")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["optim.lr=0.05", "ema=true"]`` -> ``{"optim.lr": 0.05, "ema": True}`` (YAML values)."""
    out: dict[str, Any] = {}
    for item in items:
        keys, value = _parse_override(str(item))
        out[".".join(keys)] = value
    return out


def _set(tree: dict, path: Sequence[str], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        nxt = node.get(part)
        if not isinstance(nxt, dict):
            nxt = {}
            node[part] = nxt
        node = nxt
    node[path[-1]] = value


def _merge(base: dict, update: Mapping) -> dict:
    for k, v in update.items():
        if isinstance(v, Mapping) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        elif isinstance(v, Mapping):
            base[k] = _merge({}, v)
        else:
            base[k] = v
    return base


def _valid_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        keys.append(prefix + name)
        ann = field.annotation
        for cand in (ann, *getattr(ann, "__args__", ())):
            if isinstance(cand, type) and issubclass(cand, BaseModel):
                keys += _valid_keys(cand, prefix + name + ".")
    return keys


def _describe(err: dict, where: str) -> str:
    parts = [str(p) for p in err["loc"] if not str(p).startswith("function-")]
    key = ".".join(parts) or "(top level)"
    received = err.get("input")
    kind = err["type"]
    if kind == "extra_forbidden":
        section = key.rsplit(".", 1)[0] if "." in key else ""
        keys = _valid_keys(TrainConfig)
        if section:
            valid = [k for k in keys if k.rsplit(".", 1)[0] == section]
        else:
            valid = [k for k in keys if "." not in k]
        close = difflib.get_close_matches(key, _valid_keys(TrainConfig), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        return f"unknown key {key!r}.{hint} Valid keys here: {', '.join(valid)}."
    ctx = err.get("ctx") or {}
    msg = str(ctx.get("error", err["msg"])) if kind == "value_error" else err["msg"]
    msg = msg.removeprefix("Value error, ").removeprefix("Input should be ")
    if kind == "value_error" and isinstance(received, dict):
        return f"{msg}."  # a check across several keys: the message names them
    if kind == "literal_error":
        msg = f"one of {ctx.get('expected')}"
    elif kind != "value_error":
        msg = f"a value {msg}" if msg.split(" ")[0] in ("greater", "less") else msg
    return f"{key}: received {received!r}; expected {msg}."


def validate_config(data: Mapping[str, Any], where: str = "the config") -> TrainConfig:
    """Validates a plain dict into a ``TrainConfig``.

    Args:
        data: nested dict of config values.
        where: named in the error (e.g. the YAML file).
    Returns:
        The validated config.
    Raises:
        ConfigError naming each bad key, the received value and the allowed values.
    """
    try:
        return TrainConfig.model_validate(dict(data))
    except ValidationError as e:
        lines = []
        for err in e.errors():
            if err["type"] == "literal_error" and err.get("input") is None:
                continue
            lines.append("  " + _describe(err, where))
        if not lines:  # only the Optional's None branch complained: report everything
            lines = ["  " + _describe(err, where) for err in e.errors()]
        raise ConfigError(
            f"invalid value(s) in {where}:\n" + "\n".join(dict.fromkeys(lines))
            + "\nFix the YAML file or pass key=value, e.g. optim.name=sgd."
        ) from None


def load_config(
    path: str | os.PathLike | None = None,
    overrides: Sequence[str] | Mapping[str, Any] | None = None,
) -> TrainConfig:
    """Loads a recipe and applies overrides.

    Args:
        path: a YAML file or a packaged recipe's name (None: the defaults).
        overrides: ``["optim.lr=0.05", "ema=true"]`` (values parsed as YAML) or a dict,
            nested (``{"optim": {"lr": 0.05}}``) or dotted (``{"optim.lr": 0.05}``).
    Returns:
        The validated ``TrainConfig``.
    Raises:
        ConfigError for a missing/unreadable file, a malformed override or a bad value.
    """
    tree: dict[str, Any] = {}
    where = "the config"
    if path is not None:
        where = str(path)
        path = resolve_recipe(path)  # a file, or a packaged recipe's name (fmnist_fast)
        try:
            with open(path, encoding="utf-8") as f:
                loaded = yaml.safe_load(f) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path} is not valid YAML: {e}") from None
        except UnicodeDecodeError as e:
            raise ConfigError(f"{path} is not UTF-8 text (byte {e.start}: {e.reason}); save it "
                              "as UTF-8 (YAML files are UTF-8).") from None
        if not isinstance(loaded, dict):
            kind = type(loaded).__name__
            raise ConfigError(f"{path} must hold a mapping of keys (received {kind}).")
        tree = _merge(tree, loaded)
    if overrides:
        where += " + overrides" if path else " (overrides)"
        if isinstance(overrides, Mapping):
            for k, v in overrides.items():
                if "." in str(k):
                    _set(tree, str(k).split("."), v)
                elif isinstance(v, Mapping) and isinstance(tree.get(k), dict):
                    _merge(tree[k], v)
                else:
                    tree[k] = _merge({}, v) if isinstance(v, Mapping) else v
        else:
            for item in overrides:
                keys, value = _parse_override(str(item))
                _set(tree, keys, value)
    return validate_config(tree, where)


def save_config(cfg: TrainConfig, path: str | os.PathLike) -> None:
    """Writes the resolved config as YAML (atomically)."""
    from ..files import atomic_write_bytes

    text = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
    atomic_write_bytes(path, lambda f: f.write(text.encode()))
