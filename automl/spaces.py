"""Search spaces: the only YAML reader. YAML at the edge, frozen dataclasses inside."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from automl.errors import ConfigError
from automl.paths import SPACES_DIR

logger = logging.getLogger(__name__)

PARAM_TYPES = ("float", "int", "choice")
_FIELDS = {
    "float": {"type", "low", "high", "log", "init"},
    "int": {"type", "low", "high", "log", "init"},
    "choice": {"type", "values", "init"},
}
_TOP_KEYS = {"track", "modality", "params"}
MODALITIES = ("text", "image")
# The parameters each track's trainer understands; anything else is a typo.
KNOWN_PARAMS: dict[str, frozenset[str]] = {
    "finetune": frozenset(
        {
            "backbone",
            "freeze_layers",
            "learning_rate",
            "weight_decay",
            "dropout",
            "label_smoothing",
            "optimizer",
            "warmup_ratio",
            "epochs",
            "batch_size",
            "max_length",
            "augment",
            "augment_strength",
            "patience",
        }
    ),
    # automl/trainers/fewshot.py; head_epochs and max_steps are not searched by default.
    "fewshot": frozenset(
        {
            "method",
            "backbone",
            "C",
            "max_length",
            "head",
            "body_learning_rate",
            "head_learning_rate",
            "num_iterations",
            "sampling_strategy",
            "epochs",
            "batch_size",
            "warmup_proportion",
            "head_epochs",
            "max_steps",
        }
    ),
    # automl/trainers/image.py (modality: image, track: finetune)
    "image-finetune": frozenset(
        {
            "backbone",
            "freeze_blocks",
            "learning_rate",
            "weight_decay",
            "dropout",
            "label_smoothing",
            "epochs",
            "batch_size",
            "image_size",
            "augment_strength",
            "flip",
            "patience",
        }
    ),
    # automl/trainers/image_fewshot.py (modality: image, track: fewshot)
    "image-fewshot": frozenset({"method", "backbone", "image_size", "C"}),
}


def _known_key(track: str, modality: str) -> str:
    return track if modality == "text" else f"{modality}-{track}"


@dataclass(frozen=True)
class ParamSpec:
    """One searched parameter with its cheap starting point `init`."""

    name: str
    type: str
    init: Any
    low: float | None = None
    high: float | None = None
    log: bool = False
    values: tuple[Any, ...] = ()

    def contains(self, value: Any) -> bool:
        if self.type == "choice":
            return value in self.values
        assert self.low is not None and self.high is not None
        return isinstance(value, int | float) and self.low <= value <= self.high


@dataclass(frozen=True)
class SearchSpace:
    """A track's searched parameters, each with a cheap starting point."""

    track: str
    params: tuple[ParamSpec, ...]
    source: str = "<memory>"
    modality: str = "text"  # "image": search_spaces/image*.yaml

    def get(self, name: str) -> ParamSpec | None:
        return next((p for p in self.params if p.name == name), None)

    def init_config(self) -> dict[str, Any]:
        """The cheap, good starting configuration (the first trial)."""
        return {p.name: p.init for p in self.params}

    def with_init(self, name: str, value: Any) -> SearchSpace:
        """A copy whose parameter `name` starts at `value` (which must be in its range)."""
        spec = self.get(name)
        if spec is None:
            raise ConfigError(f"cannot set the starting value of unknown parameter {name!r}")
        if not spec.contains(value):
            raise ConfigError(f"{name}: starting value {value!r} is outside its range")
        return self._with_param(replace(spec, init=value))

    def with_choices(self, name: str, values: list[Any]) -> SearchSpace:
        """A copy with a choice parameter narrowed/replaced (e.g. --backbone)."""
        spec = self.get(name)
        if spec is None or not values:
            raise ConfigError(f"cannot set choices for unknown parameter {name!r}")
        init = spec.init if spec.init in values else values[0]
        return self._with_param(
            ParamSpec(name=name, type="choice", init=init, values=tuple(values))
        )

    def _with_param(self, new: ParamSpec) -> SearchSpace:
        """A copy with the parameter of the same name replaced by `new`."""
        params = tuple(new if p.name == new.name else p for p in self.params)
        return replace(self, params=params)


def default_space_path(track: str = "finetune", modality: str = "text") -> Path:
    """search_spaces/<track>.yaml for text; image.yaml / image_fewshot.yaml for images."""
    if modality == "image":
        return SPACES_DIR / ("image.yaml" if track == "finetune" else "image_fewshot.yaml")
    return SPACES_DIR / f"{track}.yaml"


def load_space(
    path: str | Path | None = None, track: str = "finetune", modality: str = "text"
) -> SearchSpace:
    """Read and validate a search space YAML file (default: the track's and modality's file
    in search_spaces/)."""
    path = Path(path) if path else default_space_path(track, modality)
    if not path.is_file():
        raise ConfigError(f"search space file {path} not found: pass an existing --space FILE")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    return parse_space(raw, source=str(path))


def parse_space(raw: Any, source: str = "<memory>") -> SearchSpace:
    """Validate a parsed YAML mapping; every error names the file and the key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping with 'track' and 'params'")
    unknown = set(raw) - _TOP_KEYS
    if unknown:
        raise ConfigError(
            f"{source}: unknown key {sorted(unknown)[0]!r}; allowed keys: {sorted(_TOP_KEYS)}"
        )
    track = raw.get("track", "finetune")
    if track not in ("finetune", "fewshot"):
        raise ConfigError(f"{source}: unknown track {track!r}; choose one of finetune, fewshot")
    modality = raw.get("modality", "text")
    if modality not in MODALITIES:
        raise ConfigError(
            f"{source}: unknown modality {modality!r}; choose one of {', '.join(MODALITIES)}"
        )
    params_raw = raw.get("params")
    if not isinstance(params_raw, dict) or not params_raw:
        raise ConfigError(f"{source}: 'params' must be a non-empty mapping of parameters")
    key = _known_key(track, modality)
    specs = [_parse_param(name, spec, source, key) for name, spec in params_raw.items()]
    return SearchSpace(track=track, params=tuple(specs), source=source, modality=modality)


def _parse_param(name: str, spec: Any, source: str, track: str) -> ParamSpec:
    where = f"{source}: params.{name}"
    if name not in KNOWN_PARAMS[track]:
        raise ConfigError(
            f"{where}: unknown parameter {name!r}; the {track} track knows "
            f"{sorted(KNOWN_PARAMS[track])}"
        )
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected a mapping like {{type: float, low: .., high: ..}}")
    ptype = spec.get("type")
    if ptype not in PARAM_TYPES:
        raise ConfigError(f"{where}.type: {ptype!r} is not one of {list(PARAM_TYPES)}")
    unknown = set(spec) - _FIELDS[ptype]
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {sorted(unknown)[0]!r} for a {ptype} parameter; "
            f"allowed: {sorted(_FIELDS[ptype])}"
        )
    if "init" not in spec:
        raise ConfigError(f"{where}: 'init' (a cheap starting value) is required")
    if ptype == "choice":
        values = spec.get("values")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}.values: expected a non-empty list")
        if spec["init"] not in values:
            raise ConfigError(f"{where}.init: {spec['init']!r} is not one of {values}")
        return ParamSpec(name=name, type=ptype, init=spec["init"], values=tuple(values))
    low, high = spec.get("low"), spec.get("high")
    for key, val in (("low", low), ("high", high)):
        if not isinstance(val, int | float) or isinstance(val, bool) or not math.isfinite(val):
            raise ConfigError(f"{where}.{key}: expected a number, got {val!r}")
    assert isinstance(low, int | float) and isinstance(high, int | float)
    if ptype == "int" and not (float(low).is_integer() and float(high).is_integer()):
        raise ConfigError(f"{where}: low and high of an int parameter must be whole numbers")
    if low > high:
        raise ConfigError(f"{where}: low ({low}) is greater than high ({high})")
    log = bool(spec.get("log", False))
    if log and low <= 0:
        raise ConfigError(f"{where}: a log-scaled range needs low > 0, got {low}")
    init = spec["init"]
    if not isinstance(init, int | float) or not low <= init <= high:
        raise ConfigError(f"{where}.init: {init!r} is outside [{low}, {high}]")
    if ptype == "int":
        low, high, init = int(low), int(high), int(init)
    return ParamSpec(name=name, type=ptype, init=init, low=low, high=high, log=log)
