"""What each benchmark run changes in a bundle's own ``train.json``: profiles and methods.

A run is the bundle's config plus, in this order: the profile's overrides, the user's ``--set``
overrides, the method's edits, and the run's own entries (``bundle_root``, ``dataset_dir``,
``seed``). Everything is a MONAI config override (``id#path: value``), so the JSON records it and
``python -m monai.bundle run`` with the same overrides reproduces a run.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from monai.bundle import ConfigParser
from monai.bundle.reference_resolver import ReferenceResolver

__all__ = ["METHODS", "PROFILES", "method_overrides", "parse_overrides", "check_overrides"]

METHODS: tuple[str, ...] = ("ce", "danil", "random", "focal")
"""``danil``: the bundle as it is; ``ce``: without the mining handler; ``random``: DANIL with
random distractors (the control); ``focal``: MONAI's FocalLoss without the mining handler."""

# One table, task -> profile -> config overrides. "cpu" fits 3 seeds x {ce, danil} of a task in about
# 30 minutes on 2 shared CPU cores with --threads 1 (sized from 1- and 2-epoch runs, docs/benchmarks.md);
# "gpu" is the full configuration for one GPU. Every profile has num_workers 0: the bundles cache every
# image up to the first random transform (CacheDataset), so loader workers would only add their start-up
# per epoch, and parallel runs (--jobs) share the CPU cores anyway. What a profile leaves out is the bundle's own
# (learning rate, optimizer, schedule, lambda, margin, augmentation).
PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "retina": {
        # 1,080 training images at about 11 s per epoch: 20 epochs x 6 runs is about 23 minutes
        "cpu": {"image_size": 28, "epochs": 20, "batch_size": 64, "num_workers": 0},
        # MedMNIST's ResNet-18 (28) input size; 60 epochs (MedMNIST trains 100) so that the 36 runs of
        # every task x {ce, danil, random, focal} x 3 seeds fit one lent GPU's few minutes (--jobs 12)
        "gpu": {"image_size": 28, "epochs": 60, "batch_size": 64, "num_workers": 0},
    },
    "pathology": {
        # 681 training images: about 7 s per epoch
        "cpu": {"image_size": 28, "epochs": 30, "batch_size": 64, "num_workers": 0},
        "gpu": {"image_size": 28, "epochs": 60, "batch_size": 64, "num_workers": 0},
    },
    "skin": {
        # 7,263 training images: the bundle's 7x7 stride-2 stem at 64 px trains at 15 img/s here, a 3x3
        # stride-1 stem at 32 px at 90 img/s; even so only 3 epochs fit, so the gpu profile counts for skin
        "cpu": {
            "image_size": 32,
            "epochs": 3,
            "batch_size": 64,
            "num_workers": 0,
            "network_def#conv1_t_size": 3,
            "network_def#conv1_t_stride": 1,
        },
        # the bundle's setting and the prototype's: 112 px, 20 epochs
        "gpu": {"image_size": 112, "epochs": 20, "batch_size": 64, "num_workers": 0},
    },
}

_FOCAL_LOSS = {"_target_": "monai.losses.FocalLoss", "use_softmax": True, "gamma": 2.0, "to_onehot_y": True}


def parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """``["danil#lambda_max=1.0", "miner#neuron_weighting=topk"]`` -> ``{"danil#lambda_max": 1.0, ...}``.

    A value is read as JSON when it parses (numbers, ``true``, ``null``, lists, objects), else kept
    as a string, so ``--set network_def#_target_=monai.networks.nets.resnet34`` needs no quotes.

    Raises:
        ValueError: for an item without ``=`` or with an empty key.
    """
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--set expects key=value (e.g. danil#lambda_max=1.0), got {pair!r}.")
        try:
            overrides[key] = json.loads(text)
        except json.JSONDecodeError:
            overrides[key] = text
    return overrides


def check_overrides(parser: ConfigParser, overrides: Mapping[str, Any], source: str) -> None:
    """Refuses overrides whose target cannot exist, so a typo never silently adds an unused entry.

    A top-level id must exist in the bundle; a nested id (``loss#label_smoothing``) may be new, but
    its parent (``loss``) must exist.

    Raises:
        ValueError: naming the id, where it came from (``source``) and what exists.
    """
    for key in overrides:
        parent = key.rsplit("#", 1)[0] if "#" in key else None
        if key in parser or (parent is not None and parent in parser):
            continue
        where = f"parent {parent!r}" if parent is not None else f"id {key!r}"
        top = ", ".join(sorted(k for k in parser.config if not k.startswith("_")))  # type: ignore[union-attr]
        raise ValueError(f"{source} {key!r}: the bundle config has no {where}; top-level ids are: {top}.")


_RUN_SECTIONS = ("train", "validate")
_ENTRY_POINTS = ("initialize", "run", "training", "finalize")


def _refs(config: Any) -> set[str]:
    """Top-level ids referenced anywhere in ``config`` (``@loss``, ``$@danil.miner``, ``@train#dataset``)."""
    if isinstance(config, dict):
        return set().union(*(_refs(v) for v in config.values())) if config else set()
    if isinstance(config, list):
        return set().union(*(_refs(v) for v in config)) if config else set()
    if isinstance(config, str):
        refs = ReferenceResolver.match_refs_pattern(config)
        return {ref.replace(ReferenceResolver.sep, "#").split("#")[0] for ref in refs}
    return set()


def _mining_ids(config: dict) -> set[str]:
    """``danil`` and every top-level id that uses it (``@danil`` or through another such id).

    The engine sections (``train``, ``validate``) are left out: they reach the handler only through the
    lists this module edits.
    """
    found = {"danil"}
    changed = True
    while changed:
        changed = False
        for key, value in config.items():
            if key in found or key in _RUN_SECTIONS or key in _ENTRY_POINTS or key == "resume":
                continue
            if _refs(value) & found:
                found.add(key)
                changed = True
    return found


def _without(config: Any, banned: set[str], path: str) -> tuple[Any, dict[str, Any]]:
    """Removes every list element (a handler) and ``save_dict`` entry of ``config`` that uses ``banned``.

    Returns:
        The cleaned config, and the edits as overrides: for each container that lost an entry, its id
        and new content (an outer container's edit already holds its cleaned children).
    """
    if isinstance(config, list):
        children = [_without(item, banned, f"{path}#{i}") for i, item in enumerate(config)]
        kept = [item for (item, _), original in zip(children, config) if not _refs(original) & banned]
        if len(kept) < len(config):
            return kept, {path: kept}
        return kept, {k: v for _, edits in children for k, v in edits.items()}
    if isinstance(config, dict):
        children_of = {key: _without(value, banned, f"{path}#{key}") for key, value in config.items()}
        cleaned = {
            key: item
            for key, (item, _) in children_of.items()
            if not (path.endswith("save_dict") and _refs(config[key]) & banned)
        }
        if len(cleaned) < len(config):
            return cleaned, {path: cleaned}
        return cleaned, {k: v for _, edits in children_of.values() for k, v in edits.items()}
    return config, {}


def method_overrides(method: str, parser: ConfigParser) -> dict[str, Any]:
    """The config edits that turn the bundle (``danil``) into ``method``.

    - ``danil``: none.
    - ``ce``: the entry attaching the mining handler (``{"_target_": "monai_danil.handlers.SharedHandler",
      "handler": "@danil"}``) removed from ``train#handlers``, together with every
      other handler or checkpoint entry that uses it (a TensorBoard figure of the mined pairs, say).
      The loss stays the bundle's ``DistractorAwareLoss``, which without mining context is plain
      cross-entropy with the same class weights and label smoothing.
    - ``random``: ``miner#distractor_class = "random"`` (and ``miner#distractor_classes = 1`` where the
      bundle mines several confusing classes: the control draws one random other class), everything
      else as ``danil``.
    - ``focal``: as ``ce``, with ``loss`` replaced by MONAI's ``FocalLoss(use_softmax=True,
      gamma=2.0, to_onehot_y=True)`` (the bundle loss's class ``weight``, if any, carried over);
      labels arrive as (B,) and FocalLoss wants (B, 1), hence the reshaping lambda.

    Args:
        method: one of :data:`METHODS`.
        parser: the bundle config with the profile and user overrides already applied.

    Raises:
        ValueError: for an unknown method, a bundle whose ``train#handlers`` never uses ``@danil``, or one
            whose training still uses the handler after the removal (named in the message).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}.")
    if method == "danil":
        return {}
    if method == "random":
        edits = {"miner#distractor_class": "random"}
        # several confusing classes rank the network's own confusion, which a random draw has none of:
        # the control draws one random other class (DistractorMiner refuses both together)
        if isinstance(parser.get("miner"), dict) and parser.get("miner#distractor_classes", 1) != 1:
            edits["miner#distractor_classes"] = 1
        return edits
    if "danil" not in _refs(parser["train#handlers"]):
        raise ValueError("the bundle's train#handlers has no entry using '@danil' to remove; is DANIL wired in?")
    config = parser.get()
    banned = _mining_ids(config)
    edits: dict[str, Any] = {}
    cleaned: dict[str, Any] = {}
    for section in _RUN_SECTIONS:
        if section in config:
            cleaned[section], section_edits = _without(config[section], banned, section)
            edits.update(section_edits)
    left = {k for k in (*_RUN_SECTIONS, *_ENTRY_POINTS) if k in config and _refs(cleaned.get(k, config[k])) & banned}
    if left:
        raise ValueError(
            f"cannot build {method!r}: {sorted(left)} still use {sorted(banned)} after removing the mining handler."
        )
    if method == "focal":
        focal = dict(_FOCAL_LOSS)
        loss = config["loss"]
        if isinstance(loss, dict) and loss.get("weight") is not None:
            focal["weight"] = loss["weight"]
        edits["focal_loss"] = focal
        edits["loss"] = "$lambda pred, label: @focal_loss(pred, label.reshape(-1, 1))"
    return edits
