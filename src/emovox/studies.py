"""Recipes with variants: one YAML file that expands into several experiments.

A reproduced study needs the same data and task under several protocols (the
original, often leaky, one; a speaker-independent one; our best model). A recipe may
therefore hold a ``variants:`` list; every entry has a ``variant`` name, must state its
``protocol``, and may replace any other top-level key of the recipe::

    name: study6_ravdess_four_mlp
    corpora: [${EMOVOX_CORPORA}/ravdess/Audio_Speech_Actors_01-24]
    labels: four
    features: mfcc_chroma_mel
    model: mlp
    variants:
      - variant: original_leaky
        protocol: {kind: random, allow_leakage: true, test_fraction: 0.25}
      - variant: speaker_folds
        protocol: {kind: speaker_folds, n_folds: 6}

A key given in a variant replaces the recipe's value of that key as a whole (no deep
merge, so a variant's ``model`` never inherits parameters of another model). Each
variant is then validated as a strict :class:`~emovox.config.ExperimentConfig` whose
``variant`` field holds the variant's name. A file without ``variants:`` is a plain
experiment config.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from emovox.config import ExperimentConfig, load_config
from emovox.errors import ConfigError

__all__ = ["load_recipe", "variant_label"]


def _read_mapping(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: recipe file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({error})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe must be a mapping")
    return data


def load_recipe(
    path: str | Path, overrides: Sequence[str] = (), only: Sequence[str] | None = None
) -> list[ExperimentConfig]:
    """Read a recipe and return the validated config of each of its variants.

    Parameters
    ----------
    path : str or Path
        YAML recipe; with or without a ``variants:`` list.
    overrides : sequence of str
        ``dotted.key=value`` overrides applied to every variant (after the variant's
        own keys, so an override wins).
    only : sequence of str, optional
        Names of the variants to keep (in recipe order); unknown names are an error.

    Returns
    -------
    list of ExperimentConfig
        One per variant (one for a plain config).

    Raises
    ------
    ConfigError
        Bad YAML, a variant without ``variant`` name or ``protocol``, duplicate or
        unknown variant names, or an invalid expanded config (naming the variant).
    """
    path = Path(path)
    data = _read_mapping(path)
    variants = data.pop("variants", None)
    if variants is None:
        if only:
            raise ConfigError(f"{path}: has no variants, so --variant cannot choose one")
        return [load_config(path, overrides, data=data)]
    if not isinstance(variants, list) or not variants:
        raise ConfigError(f"{path}: variants must be a non-empty list of mappings")
    configs, seen = [], []
    for number, entry in enumerate(variants, start=1):
        if not isinstance(entry, dict) or not entry.get("variant"):
            raise ConfigError(f"{path}: variant {number} needs a 'variant: <name>' key")
        entry = dict(entry)
        name = str(entry.pop("variant"))
        if name in seen:
            raise ConfigError(f"{path}: variant {name!r} is defined twice")
        seen.append(name)
        if "protocol" not in entry:
            # Every number must say how it was measured: no inherited protocols.
            raise ConfigError(f"{path}: variant {name!r} must state its protocol")
        if only and name not in only:
            continue
        merged = {**data, **entry, "variant": name}
        try:
            configs.append(load_config(path, overrides, data=merged))
        except ConfigError as error:
            raise ConfigError(f"variant {name!r}: {error}") from None
    unknown = sorted(set(only or ()) - set(seen))
    if unknown:
        raise ConfigError(f"{path}: unknown variants {unknown}; variants: {', '.join(seen)}")
    return configs


def variant_label(config: ExperimentConfig) -> str:
    """``name.variant`` (or the name alone), as run folders are named."""
    return f"{config.name}.{config.variant}" if config.variant else config.name
