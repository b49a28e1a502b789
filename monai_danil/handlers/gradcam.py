"""Grad-CAM overlays of an evaluator's predictions, one PNG per image, with MONAI's ``GradCAM``."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from monai.utils import convert_to_tensor
from monai.visualize import GradCAM
from PIL import Image
from torch import nn

from monai_danil.networks import unwrap_network

from .prediction_saver import _per_sample
from .utils import attach_round

if TYPE_CHECKING:  # annotations only
    from ignite.engine import Engine

__all__ = ["GradCAMSaver", "gradcam_overlay"]


def _unit_range(maps: torch.Tensor) -> torch.Tensor:
    """Each map scaled to [0, 1], most important = 1 (MONAI's default normaliser maps the maximum to 0)."""
    flat = maps.flatten(1)
    low, high = flat.min(dim=1).values, flat.max(dim=1).values
    scale = (high - low).clamp_min(1e-12)
    shape = (-1, *[1] * (maps.ndim - 1))
    return ((maps - low.view(shape)) / scale.view(shape)).clamp(0.0, 1.0)


def _jet(values: np.ndarray) -> np.ndarray:
    """(H, W) in [0, 1] to (H, W, 3) in [0, 1]: the jet colour map, blue (0) to red (1)."""
    channels = [np.clip(1.5 - np.abs(4.0 * values - offset), 0.0, 1.0) for offset in (3.0, 2.0, 1.0)]
    return np.stack(channels, axis=-1)


def gradcam_overlay(image: Any, cam: Any, alpha: float = 0.5) -> np.ndarray:
    """An RGB picture of ``cam`` in the jet colour map blended over ``image``.

    Args:
        image: the network input, ``(C, H, W)`` with intensities in [0, 1] (values outside are
            clipped; one channel is shown as grey, more than three keep the first three).
        cam: the map, ``(H, W)`` or ``(1, H, W)`` in [0, 1], 1 = most important.
        alpha: weight of the colour map. Default 0.5.

    Returns:
        ``(H, W, 3)`` uint8, rows and columns as in the tensor.

    Raises:
        ValueError: when the spatial sizes of ``image`` and ``cam`` differ.
    """
    picture = np.asarray(convert_to_tensor(image, track_meta=False).detach().float().cpu().numpy())
    heat = np.asarray(convert_to_tensor(cam, track_meta=False).detach().float().cpu().numpy())
    heat = heat[0] if heat.ndim == 3 else heat
    if heat.shape != picture.shape[-2:]:
        raise ValueError(f"image {tuple(picture.shape)} and map {np.shape(cam)} differ in spatial size.")
    picture = picture[:3] if picture.shape[0] >= 3 else np.repeat(picture[:1], 3, axis=0)
    rgb = np.clip(picture.transpose(1, 2, 0), 0.0, 1.0)
    blended = (1.0 - alpha) * rgb + alpha * _jet(np.clip(heat, 0.0, 1.0))
    return np.round(blended * 255.0).astype(np.uint8)


def _png_name(name: str, sample_id: int) -> PurePosixPath:
    """Where an image's overlay goes, relative to the overlay folder: its listed path, as ``.png``."""
    path = PurePosixPath(name.replace(os.sep, "/"))
    if path.is_absolute() or ".." in path.parts or not path.parts:
        path = PurePosixPath(f"{sample_id:06d}_{path.name or 'image'}")
    return path.with_name(path.name + ".png") if path.suffix.lower() != ".png" else path


class GradCAMSaver:
    """Writes a Grad-CAM overlay PNG of every image an evaluator predicts, for its predicted class.

    At each iteration it runs MONAI's :class:`monai.visualize.GradCAM` on ``target_layer`` of the
    network for the batch's predicted classes (one backward pass per predicted class: MONAI's
    ``GradCAM`` scores a batch with a single class index), scales each map to [0, 1] (1 = most
    important), and writes ``output_dir/<name>.png``: the jet-coloured map blended over the network's
    input image, **at the network's input size** (after the bundle's crop and resize, not mapped back
    to the original picture), rows and columns as the network sees them. ``<name>`` is the image's
    ``name_key`` (the path as listed or found, keeping sub-folders; ``.png`` appended unless it is
    one); an absolute or ``..`` path becomes ``<id>_<file name>.png``. The PNGs are written into a
    hidden sibling folder during the round, which replaces ``output_dir`` at its end: a failed run
    leaves ``output_dir`` as it was (an earlier failed run's hidden folder is removed at the next start).

    Grad-CAM's resolution is the target layer's: a MONAI ResNet's last block ``layer4`` is 1/16 of
    the input after a stride-1 stem (2 x 2 at 28 px), 1/32 after the default stride-2 stem (4 x 4 at
    112 px); the map is bilinearly upsampled to the input size.

    Args:
        network: the evaluator's network (possibly DDP-wrapped; the plain module is used).
        output_dir: the folder of the PNGs, created if needed.
        target_layer: dotted module name of the layer whose activations and gradients make the map,
            e.g. ``"layer4"`` (a MONAI ResNet's last convolutional block). Default ``"layer4"``.
        alpha: weight of the colour map over the image. Default 0.5.
        image_key: batch key of the network input. Default ``"image"``.
        pred_key: key of the class scores in ``engine.state.output``. Default ``"pred"``.
        name_key: batch key of the image name. Default ``"relative_path"``.
        id_key: batch key of the sample id. Default ``"id"``.

    Raises:
        ValueError: when the network has no module ``target_layer``, or ``alpha`` is outside [0, 1];
            during a round, when two images would write the same file.

    Example:
        >>> GradCAMSaver(network, "eval/gradcam", target_layer="layer4").attach(evaluator)
    """

    def __init__(
        self,
        network: nn.Module,
        output_dir: str | os.PathLike[str],
        target_layer: str = "layer4",
        alpha: float = 0.5,
        image_key: str = "image",
        pred_key: str = "pred",
        name_key: str = "relative_path",
        id_key: str = "id",
    ) -> None:
        module = unwrap_network(network)
        names = [name for name, _ in module.named_modules() if name]
        if target_layer not in names:
            raise ValueError(
                f"{type(module).__name__} has no layer {target_layer!r} for Grad-CAM; its top-level layers are "
                f"{[n for n in names if '.' not in n]}."
            )
        if not 0.0 <= float(alpha) <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}.")
        self.network = module
        self.output_dir = Path(output_dir)
        self.target_layer = target_layer
        self.alpha = float(alpha)
        self.image_key, self.pred_key, self.name_key, self.id_key = image_key, pred_key, name_key, id_key
        self.cam: GradCAM | None = None
        self.written: dict[Path, str] = {}  # overlay path relative to output_dir -> image name
        self._staging: Path | None = None

    def attach(self, engine: Engine) -> None:
        """Register on the round's start, iterations and end (idempotent)."""
        attach_round(engine, self.reset, self, self.publish)

    def _staging_prefix(self) -> str:
        return f".{self.output_dir.name}.tmp-"

    def reset(self, engine: Engine) -> None:
        """``EPOCH_STARTED``: a new round, written into a fresh hidden folder."""
        self.written = {}
        parent = self.output_dir.parent
        parent.mkdir(parents=True, exist_ok=True)
        for stale in parent.glob(self._staging_prefix() + "*"):
            shutil.rmtree(stale, ignore_errors=True)
        self._staging = parent / f"{self._staging_prefix()}{uuid.uuid4().hex[:8]}"
        self._staging.mkdir()

    def publish(self, engine: Engine) -> None:
        """``EPOCH_COMPLETED``: the round's folder replaces ``output_dir``."""
        if self._staging is None:
            return
        staging, self._staging = self._staging, None
        if self.output_dir.exists():
            shutil.rmtree(self.output_dir)
        os.replace(staging, self.output_dir)

    def maps(self, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) Grad-CAM maps in [0, 1] of ``images`` (B, C, H, W) for ``classes`` (B,)."""
        if self.cam is None:
            # the hooks stay on the layer from here on; they only store what the layer computes
            self.cam = GradCAM(nn_module=self.network, target_layers=self.target_layer, postprocessing=_unit_range)
        maps = torch.zeros((images.shape[0], 1, *images.shape[2:]), device=images.device)
        with torch.enable_grad():
            for c in classes.unique().tolist():
                rows = torch.nonzero(classes == c).reshape(-1)
                maps[rows] = self.cam(images[rows], class_idx=int(c)).detach().float()
        return maps

    def __call__(self, engine: Engine) -> None:
        """``ITERATION_COMPLETED``: one overlay per image of the batch."""
        batch, output = engine.state.batch, engine.state.output
        device = next(self.network.parameters()).device
        images = torch.stack(
            [convert_to_tensor(i, track_meta=False).float() for i in _per_sample(batch, self.image_key)]
        ).to(device)
        classes = torch.stack([torch.as_tensor(p).reshape(-1).argmax() for p in _per_sample(output, self.pred_key)])
        names = [str(n) for n in _per_sample(batch, self.name_key)]
        ids = [int(i) for i in _per_sample(batch, self.id_key)]
        maps = self.maps(images, classes.to(device))
        if self._staging is None:
            self.reset(engine)
        for image, cam, name, sample_id in zip(images, maps, names, ids):
            relative = Path(_png_name(name, sample_id))
            if relative in self.written:
                raise ValueError(
                    f"images {self.written[relative]!r} and {name!r} would both write {self.output_dir / relative}."
                )
            self.written[relative] = name
            target = self._staging / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(gradcam_overlay(image, cam, self.alpha)).save(target)
