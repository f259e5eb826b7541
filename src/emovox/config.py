"""Experiment configuration: a validated YAML file plus ``key=value`` overrides."""

from __future__ import annotations

import functools
import inspect
import os
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from emovox.errors import ConfigError
from emovox.normalization import DEFAULT_PRIOR_WEIGHT


class CorpusSpec(BaseModel):
    """One corpus: its folder (or manifest) and optionally its adapter kind."""

    model_config = ConfigDict(extra="forbid")
    path: str
    kind: str | None = None


class NamedSpec(BaseModel):
    """A component chosen by name with its keyword parameters."""

    model_config = ConfigDict(extra="forbid")
    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class ModelSpec(NamedSpec):
    """A classifier, with an optional grid of parameters to choose from.

    ``search: {C: [0.01, 0.1, 1]}`` picks the best value by UAR over speaker-group
    folds of the training speakers only.
    """

    search: dict[str, list[Any]] | None = None
    #: Weight training rows so each corpus / class / corpus x class counts equally.
    balance: Literal["none", "corpus", "class", "corpus_class"] = "none"
    #: Temperature-scale the probabilities, fitted on out-of-fold predictions over
    #: the training speakers (scikit-learn models).
    calibrate: bool = False
    #: Answer "uncertain" when the top (calibrated) probability is below this.
    uncertain_below: float | None = Field(None, gt=0, lt=1)

    @field_validator("name")
    @classmethod
    def _known_model(cls, name: str) -> str:
        from emovox.models import CLASSIFIERS, available_models

        if name in CLASSIFIERS:  # the common case, without importing the networks
            return name
        known = available_models()
        if name not in known:
            raise ValueError(f"unknown model {name!r}; known: {', '.join(known)}")
        return name


class AugmentSpec(BaseModel):
    """Augmented copies of each fold's training files (never of test files)."""

    model_config = ConfigDict(extra="forbid")
    recipe: str | list[str]
    copies: int = Field(1, ge=1)
    only_classes: list[str] | None = None
    p: float = Field(1.0, gt=0, le=1)


class ProtocolSpec(BaseModel):
    """A protocol kind (see :func:`emovox.protocols.make_splits`) and its parameters."""

    model_config = ConfigDict(extra="allow")
    kind: Literal["loso", "speaker_folds", "holdout", "cross_corpus", "loco", "random"] = (
        "speaker_folds"
    )

    @property
    def params(self) -> dict[str, Any]:
        """Every field except ``kind``, passed to the protocol function."""
        return dict(self.model_extra or {})

    @model_validator(mode="after")
    def _check_params(self) -> ProtocolSpec:
        # Checked against the protocol function's signature now, so a typo or a bad
        # value fails before any corpus or feature is read.
        try:
            checked = protocol_parameters(self.kind).model_validate(self.params)
        except ValidationError as error:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                                 for e in error.errors())
            raise ValueError(f"protocol {self.kind!r}: {problems}") from None
        for name in self.params:  # keep the coerced values ("3" -> 3)
            self.__pydantic_extra__[name] = getattr(checked, name)
        return self


@functools.cache
def protocol_parameters(kind: str) -> type[BaseModel]:
    """A strict pydantic model of the parameters protocol ``kind`` takes.

    Built from the signature of its function in :data:`emovox.protocols.PROTOCOLS`
    (all but the utterance table), plus ``allow_leakage`` and ``validate_on_test``,
    which :func:`~emovox.protocols.make_splits` takes for every protocol.

    Parameters
    ----------
    kind : str
        A protocol name.

    Returns
    -------
    type[pydantic.BaseModel]
    """
    from emovox.protocols import PROTOCOLS

    function = PROTOCOLS[kind]
    hints = typing.get_type_hints(function)
    parameters = list(inspect.signature(function).parameters.values())[1:]
    fields: dict[str, Any] = {
        p.name: (hints.get(p.name, Any), ... if p.default is p.empty else p.default)
        for p in parameters}
    fields |= {"allow_leakage": (bool, False), "validate_on_test": (bool, False)}
    return create_model(f"{kind}_parameters", __config__=ConfigDict(extra="forbid"),
                        **fields)


class ExperimentConfig(BaseModel):
    """Everything that defines an experiment; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")
    name: str
    description: str = ""
    #: Which variant of a multi-variant recipe (see :mod:`emovox.studies`) this is.
    variant: str = ""
    corpora: list[CorpusSpec]
    labels: str | dict[str, Any] = "common6"
    subset: dict[str, Any] | None = None
    features: NamedSpec
    model: ModelSpec
    normalization: Literal["none", "speaker", "session", "corpus"] = "none"
    normalization_prior: float = Field(DEFAULT_PRIOR_WEIGHT, ge=0)
    #: False: test rows are standardised by the average training speaker instead of
    #: their own statistics (a normalised model used without adaptation).
    adapt_test: bool = True
    augment: AugmentSpec | None = None
    protocol: ProtocolSpec = Field(default_factory=ProtocolSpec)
    seed: int = 0
    output_dir: str = "runs"
    cache_dir: str | None = "default"
    n_jobs: int = -1
    #: Where features are extracted: ``local`` processes, or a Ray cluster (``address``:
    #: ``HOST:PORT``; none starts one here). Models are fitted in this process either way.
    engine: Literal["local", "ray"] = "local"
    address: str | None = None

    @field_validator("corpora", mode="before")
    @classmethod
    def _corpus_shorthand(cls, value: Any) -> Any:
        if isinstance(value, str | dict):
            value = [value]
        return [{"path": v} if isinstance(v, str) else v for v in value]

    @field_validator("features", "model", mode="before")
    @classmethod
    def _name_shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"name": value}
        if isinstance(value, dict) and "name" in value and "params" not in value:
            # Allow {name: compare, n_mfcc: 40} as well as {name: ..., params: {...}}.
            reserved = {"name", "search", "balance", "calibrate", "uncertain_below"}
            return {**{k: v for k, v in value.items() if k in reserved},
                    "params": {k: v for k, v in value.items() if k not in reserved}}
        return value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Set ``dotted.key=value`` overrides (values parsed as YAML) in a config dict."""
    for override in overrides:
        if "=" not in override:
            raise ConfigError(f"override {override!r} is not of the form key=value")
        key, raw = override.split("=", 1)
        value = yaml.safe_load(raw) if raw else None
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if isinstance(child, str) and part in {"features", "model"}:
                child = {"name": child}
            if not isinstance(child, dict):
                child = {}
            node[part] = child
            node = child
        node[parts[-1]] = value
    return data


def load_config(path: str | Path | None = None, overrides: Sequence[str] = (),
                data: dict[str, Any] | None = None) -> ExperimentConfig:
    """Read and validate an experiment from YAML (and/or a dict) plus overrides.

    Corpus paths may use environment variables (``${EMOVOX_CORPORA}/emodb``); a
    relative path is taken from the current folder, or else from the config's folder.

    Raises
    ------
    ConfigError
        With every problem on its own line, naming the field.
    """
    if data is None:
        if path is None:
            raise ConfigError("give a config file or a config mapping")
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: not valid YAML ({error})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: an experiment config must be a mapping")
    data = apply_overrides(dict(data), overrides)
    try:
        config = ExperimentConfig.model_validate(data)
    except ValidationError as error:
        lines = [
            f"  {'.'.join(map(str, e['loc'])) or '(top)'}: {e['msg']}" for e in error.errors()
        ]
        where = f"{path}: " if path else ""
        raise ConfigError(f"{where}invalid experiment config:\n" + "\n".join(lines)) from None
    base = Path(path).parent if path else Path.cwd()
    for corpus in config.corpora:
        corpus.path = _resolve(corpus.path, base)
    return config


def _resolve(raw: str, base: Path) -> str:
    os.environ.setdefault("EMOVOX_CORPORA", str(default_corpora_root()))
    expanded = Path(os.path.expandvars(raw)).expanduser()
    if expanded.is_absolute() or expanded.exists():
        return str(expanded)
    candidate = base / expanded
    return str(candidate if candidate.exists() else expanded)


def default_corpora_root() -> Path:
    """``$EMOVOX_CORPORA``, else ``../shared/corpora`` beside the current folder."""
    env = os.environ.get("EMOVOX_CORPORA")
    return Path(env) if env else Path.cwd().parent / "shared" / "corpora"


def dump_config(config: ExperimentConfig) -> str:
    """The resolved config as YAML text (written into every run folder)."""
    data = config.model_dump(mode="json")
    data["protocol"] = {"kind": config.protocol.kind, **config.protocol.params}
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
