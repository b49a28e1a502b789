"""The app's working copies of this project's bundles (``bundles/<task>``).

MONAI Label sets ``bundle_root`` to the folder it serves and trains, and the bundles write their
outputs (``models/``, ``logs/``) under ``bundle_root``. Serving ``bundles/<task>`` itself would let
a training request overwrite the repository's files, so the app serves a copy: ``configs/`` is
copied from the repository at every start (a changed file is replaced, nothing else is touched)
and ``models/`` belongs to the copy. MONAI Label lists no model whose bundle has no
``models/model.pt``; a new copy is seeded with the untrained network (seed 0), so that images can
be labelled and a first model trained from zero.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from monai.bundle import ConfigParser

from monai_danil.data import atomic_file

__all__ = ["TASKS", "prepare_bundle", "is_trained", "label_aliases"]

logger = logging.getLogger(__name__)

TASKS = ("skin", "retina", "pathology")
UNTRAINED_SEED = 0


def _replace_if_changed(source: Path, target: Path) -> None:
    if target.is_file() and target.read_bytes() == source.read_bytes():
        return
    # a running server may be reading the old file: swap the new one in whole
    with atomic_file(target) as handle:
        handle.write(source.read_bytes())


def prepare_bundle(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> str:
    """Make or refresh the app's working copy of a bundle.

    Args:
        source: the repository's bundle, e.g. ``bundles/skin`` (only read).
        target: the working copy, e.g. ``<studies>/model/skin``.

    Returns:
        The working copy's path.

    Raises:
        FileNotFoundError: when ``source`` has no ``configs/inference.json``, ``train.json`` or ``metadata.json``.

    Example:
        >>> prepare_bundle("bundles/skin", "/tmp/studies/model/skin")  # doctest: +SKIP
        '/tmp/studies/model/skin'
    """
    source, target = Path(source).resolve(), Path(target).resolve()
    configs = source / "configs"
    missing = [n for n in ("inference.json", "train.json", "metadata.json") if not (configs / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{configs} lacks {', '.join(missing)}: not a bundle of this project.")
    for path in sorted(configs.iterdir()):
        if path.is_file():
            _replace_if_changed(path, target / "configs" / path.name)
    model = target / "models" / "model.pt"
    if not model.is_file():
        parser = ConfigParser()
        parser.read_config(str(target / "configs" / "inference.json"))
        parser["bundle_root"] = str(target)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(UNTRAINED_SEED)
            network = parser.get_parsed_content("network_def", instantiate=True)
        with atomic_file(model) as handle:
            torch.save(network.state_dict(), handle)
        logger.info(f"{target}: seeded models/model.pt with the untrained network (seed {UNTRAINED_SEED})")
    return str(target)


def is_trained(bundle_path: str | os.PathLike[str]) -> bool:
    """Whether a training run finished in this copy (the bundles write ``models/checkpoint.pt`` at the end)."""
    return (Path(bundle_path) / "models" / "checkpoint.pt").is_file()


def label_aliases(bundle_path: str | os.PathLike[str]) -> dict[str, str | int]:
    """The bundle's extra label spellings (``label_aliases`` in ``configs/train.json``), ``{}`` if none."""
    parser = ConfigParser()
    parser.read_config(str(Path(bundle_path) / "configs" / "train.json"))
    return dict(parser.get_parsed_content("label_aliases")) if "label_aliases" in parser else {}
