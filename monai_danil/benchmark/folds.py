"""Cross-validation folds for the accuracy benchmark: stratified, grouped, never scored where selected.

The benchmark's cross-validation pools ``train`` and ``val`` of a manifest and splits them into K
folds. Each fold is scored once, by networks trained on the other K - 1 folds; the checkpoint of each
run is selected on an *inner* validation split carved from those training folds (the same share of
the data as the manifest's own ``val``), so no scored image is ever seen by training or selection.

Images that are near-copies of each other (the same eye photographed twice, one tile saved twice) and
images of the same lesion (HAM10000's ``lesion_id``) form one group, and a group never straddles two
folds or the inner split: otherwise the scored fold holds a copy of a training image.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DUPLICATE_THRESHOLD", "CrossValidation", "build_cross_validation", "near_duplicate_groups", "read_groups"]

#: Pearson correlation of two images' 28 x 28 RGB pixels above which they are one group. Chosen on
#: train+val of the shared data: at 0.99, 111 RetinaMNIST images have such a neighbour (86% of them
#: only neighbours of their own label) and 35 PathMNIST tiles (all of their own label); at 0.98 it is
#: 458 RetinaMNIST images, 40% of them with neighbours of another grade: look-alikes, not copies.
DUPLICATE_THRESHOLD = 0.99
_THUMBNAIL = 28


def _thumbnail(path: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB").resize((_THUMBNAIL, _THUMBNAIL), Image.BILINEAR), np.float64)
    except OSError as err:
        raise OSError(f"cannot read {path} to look for near-duplicates: {err}") from None
    return pixels.ravel()


def near_duplicate_groups(images: Sequence[str], threshold: float = DUPLICATE_THRESHOLD) -> np.ndarray:
    """Group ids (N,) joining every pair of images whose pixel correlation exceeds ``threshold``.

    Each image is resized to 28 x 28 RGB; the correlation is the cosine of the mean-centred pixel
    vectors (insensitive to brightness offsets, unlike the raw cosine, which is above 0.98 for most
    pairs of fundus photographs). Pairs are joined transitively (union-find).

    Args:
        images: image paths readable by PIL.
        threshold: correlation in (-1, 1]. Default :data:`DUPLICATE_THRESHOLD`.

    Returns:
        (N,) int group ids, 0-based, in first-appearance order.

    Example:
        >>> near_duplicate_groups([])
        array([], dtype=int64)
    """
    n = len(images)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    pixels = np.stack([_thumbnail(p) for p in images])
    pixels -= pixels.mean(axis=1, keepdims=True)
    pixels /= np.maximum(np.linalg.norm(pixels, axis=1, keepdims=True), 1e-12)
    pairs = []
    for start in range(0, n, 1024):  # blocks of rows: (1024, N) similarities at a time
        rows, cols = np.nonzero(pixels[start : start + 1024] @ pixels.T > threshold)
        pairs.append((rows + start, cols))
    rows = np.concatenate([p[0] for p in pairs])
    cols = np.concatenate([p[1] for p in pairs])
    return _components(n, rows, cols)


def _components(n: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Connected components of the graph on ``n`` nodes with edges ``rows[i] - cols[i]``, first-seen order."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    _, first, inverse = np.unique(component, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))  # renumber components by their first member
    return order[inverse].astype(np.int64)


def read_groups(manifest: str | os.PathLike, column: str, ids: Sequence[int]) -> np.ndarray | None:
    """Group ids from a manifest column (e.g. ``lesion_id``) for the data rows ``ids``, or ``None`` without it."""
    with open(manifest, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if column not in [c.strip() for c in reader.fieldnames or []]:
            return None
        reader.fieldnames = [c.strip() for c in reader.fieldnames or []]
        values = [(row.get(column) or "").strip() for row in reader]
    names = [values[i] or f"row{i}" for i in ids]  # an empty cell is a group of its own
    _, inverse = np.unique(np.array(names, dtype=object), return_inverse=True)
    return inverse.astype(np.int64)


def _join(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The finest grouping coarser than both ``a`` and ``b`` (connected components of their union)."""
    n = len(a)
    rows, cols = [], []
    for groups in (a, b):
        # link every member of a group to the group's first member
        _, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
        rows.append(np.arange(n))
        cols.append(first[inverse])
    return _components(n, np.concatenate(rows), np.concatenate(cols))


def _grouped_split(labels: np.ndarray, groups: np.ndarray, n_splits: int, seed: int) -> list[np.ndarray]:
    """Indices of each of ``n_splits`` stratified folds that keep every group whole."""
    from sklearn.model_selection import StratifiedGroupKFold

    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    return [test for _, test in splitter.split(np.zeros(len(labels)), labels, groups)]


@dataclass
class CrossValidation:
    """K stratified, grouped folds over the rows of a dataset, each with an inner selection split.

    Attributes:
        k: the number of folds.
        seed: the seed of the fold split (``--cv-seed``); the inner splits use it too, so every method
            and training seed sees the same folds.
        ids: (N,) the manifest data-row ids of the pooled rows (``train`` and ``val``).
        labels: (N,) their class indices.
        groups: (N,) group ids: near-duplicates and same-lesion images share one.
        fold: (N,) the fold each row is scored in.
        inner_val: per fold, the positions (into ``ids``) of its inner selection split.
        inner_fraction: the share of the training folds held out for selection.
        duplicate_threshold: the correlation that joined near-duplicates.
    """

    k: int
    seed: int
    ids: np.ndarray
    labels: np.ndarray
    groups: np.ndarray
    fold: np.ndarray
    inner_val: list[np.ndarray]
    inner_fraction: float
    duplicate_threshold: float

    @classmethod
    def build(
        cls,
        ids: Sequence[int],
        labels: Sequence[int],
        groups: np.ndarray,
        k: int,
        seed: int,
        inner_fraction: float,
        duplicate_threshold: float = DUPLICATE_THRESHOLD,
    ) -> CrossValidation:
        """Split rows into ``k`` folds and carve each fold's inner selection split.

        Raises:
            ValueError: for ``k < 2``, an inner fraction outside (0, 0.5], or too few groups of a class.
        """
        ids, labels, groups = np.asarray(ids), np.asarray(labels), np.asarray(groups)
        if k < 2:
            raise ValueError(f"--cv needs at least 2 folds, got {k}.")
        if not 0.0 < inner_fraction <= 0.5:
            raise ValueError(f"inner selection fraction must be in (0, 0.5], got {inner_fraction}.")
        if len(np.unique(groups)) < k:
            raise ValueError(f"{len(np.unique(groups))} groups of images cannot fill {k} folds.")
        fold = np.full(len(ids), -1, dtype=np.int64)
        for index, members in enumerate(_grouped_split(labels, groups, k, seed)):
            fold[members] = index
        inner_splits = max(2, round(1.0 / inner_fraction))
        inner_val = []
        for index in range(k):
            train = np.flatnonzero(fold != index)
            # the first of the inner folds is the selection split: stratified, groups whole
            first = _grouped_split(labels[train], groups[train], inner_splits, seed + 1 + index)[0]
            inner_val.append(np.sort(train[first]))
        return cls(k, seed, ids, labels, groups, fold, inner_val, inner_fraction, duplicate_threshold)

    def split_of(self, index: int) -> np.ndarray:
        """(N,) ``"train"``, ``"val"`` (inner selection) or ``"test"`` (scored) for fold ``index``."""
        split = np.where(self.fold == index, "test", "train").astype(object)
        split[self.inner_val[index]] = "val"
        return split

    def write_fold(self, index: int, rows: Sequence[Mapping[str, str]], folder: str | os.PathLike) -> Path:
        """Write fold ``index`` as a manifest (``train``/``val``/``test``) of absolute image paths.

        Args:
            index: the fold.
            rows: per pooled row (same order as :attr:`ids`), ``{"image": absolute path, "label": as
                written in the source manifest}``.
            folder: where ``manifest.csv`` goes (created).

        Returns:
            The folder; ``manifest.csv`` rows are in :attr:`ids` order, so a fold's ``test`` rows map back
            to the pooled rows by position.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        split = self.split_of(index)
        with open(folder / "manifest.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(["relative_path", "label", "split"])
            for row, part in zip(rows, split):
                writer.writerow([row["image"], row["label"], part])
        return folder

    def record(self) -> dict[str, Any]:
        """The folds as written into the benchmark JSON."""
        sizes = [int((self.fold == f).sum()) for f in range(self.k)]
        return {
            "k": self.k,
            "cv_seed": self.seed,
            "selection": "per fold, the checkpoint with the best key metric on an inner split of the training "
            "folds (stratified, groups whole); the scored fold is never trained on or selected on",
            "inner_fraction": self.inner_fraction,
            "duplicate_threshold": self.duplicate_threshold,
            "groups": int(len(np.unique(self.groups))),
            "grouped_images": int(sum(c for c in np.bincount(self.groups) if c > 1)),
            "fold_sizes": sizes,
            "inner_val_sizes": [len(v) for v in self.inner_val],
            "ids": self.ids.tolist(),
            "fold": self.fold.tolist(),
            "inner_val_ids": [self.ids[v].tolist() for v in self.inner_val],
        }


def build_cross_validation(
    manifest: str | os.PathLike,
    datalist: Sequence[Mapping[str, Any]],
    splits: Sequence[str],
    k: int,
    seed: int,
    group_column: str | None = "lesion_id",
    duplicate_threshold: float = DUPLICATE_THRESHOLD,
) -> CrossValidation:
    """Folds over ``datalist`` (``read_manifest`` rows of the pooled splits) with groups from the data.

    Args:
        manifest: the source manifest (for ``group_column``).
        datalist: the pooled rows, each with ``image``, ``label`` and ``id``.
        splits: per row, its split in the source manifest; the inner selection share is the share of
            ``val`` rows among them.
        k: folds.
        seed: ``--cv-seed``.
        group_column: a manifest column whose equal values must stay together (HAM10000's
            ``lesion_id``), used where present. Default ``"lesion_id"``.
        duplicate_threshold: see :func:`near_duplicate_groups`.
    """
    ids = [int(d["id"]) for d in datalist]
    labels = [int(d["label"]) for d in datalist]
    groups = near_duplicate_groups([d["image"] for d in datalist], duplicate_threshold)
    if group_column:
        column = read_groups(manifest, group_column, ids)
        if column is not None:
            groups = _join(groups, column)
    share = sum(1 for s in splits if s == "val") / max(1, len(splits))
    inner = min(0.5, max(0.05, share))
    return CrossValidation.build(ids, labels, groups, k, seed, inner, duplicate_threshold)
