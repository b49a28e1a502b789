"""Pictures for TensorBoard, drawn with Pillow: distractor-pair grids and confusion matrices.

Pillow is already a dependency (MONAI's PIL reader); drawing with it keeps matplotlib out of the
install. Every function returns an ``(H, W, 3)`` ``uint8`` array, what
``SummaryWriter.add_image(..., dataformats="HWC")`` writes without rescaling.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from monai_danil.transforms.io.array import LoadRGBImage

__all__ = [
    "PairTile",
    "confusion_figure",
    "fit_tile",
    "load_display_image",
    "markdown_table",
    "pair_grid",
    "square_thumbnail",
]

_BACKGROUND = (30, 30, 30)
_CAPTION = (235, 235, 235)
_PLACEHOLDER = (90, 90, 90)
_PAD = 6
_GAP = 4
_FONT_SIZE = 12
# ends of matplotlib's "Blues" colour map: light for an empty cell, dark for a full row
_LIGHT = np.array([247, 251, 255], dtype=np.float64)
_DARK = np.array([8, 48, 107], dtype=np.float64)


def _font(size: int = _FONT_SIZE) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow < 10.1 or without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _text_size(font: ImageFont.FreeTypeFont | ImageFont.ImageFont, text: str) -> tuple[int, int]:
    left, top, right, bottom = font.getbbox(text or " ")
    return int(np.ceil(right - min(left, 0))), int(np.ceil(bottom - min(top, 0)))


def _short(text: str, limit: int = 24) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def load_display_image(source: str | os.PathLike[str]) -> np.ndarray:
    """An image file as ``(H, W, 3)`` ``uint8`` RGB, rows top to bottom, as a viewer shows it.

    Read with the bundles' own loading transform, :class:`~monai_danil.transforms.LoadRGBImage`,
    not from a batch tensor (augmented, resized): the picture is what the network was given, in
    the file's orientation and colours, whatever its format (PNG, JPEG, TIFF, DICOM, NIfTI), with
    the same conversions (grey to RGB, alpha over black, 16-bit scaled by the bit depth). EXIF
    rotation is not applied, as the loader does not apply it either.

    Args:
        source: path of a 2D image the loader reads.

    Raises:
        BadImageError: when the file is missing or cannot be loaded (the message says why).
    """
    rgb = LoadRGBImage()(source).numpy()
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8).transpose(1, 2, 0)


def fit_tile(image: np.ndarray, size: int) -> np.ndarray:
    """Scale an image so its longer side is about ``size`` pixels, keeping pixels checkable.

    Larger images shrink to fit (Lanczos); smaller ones grow by the largest whole factor that
    fits, each pixel copied into a square block, so a 28 x 28 MedMNIST image is visible and its
    pixels are still exactly the file's. An image whose longer side is more than ``size / 2`` and
    at most ``size`` is shown at its native size.

    Args:
        image: ``(H, W, 3)`` ``uint8``.
        size: target length of the longer side, in pixels (>= 1).
    """
    height, width = image.shape[:2]
    longest = max(height, width)
    if longest > size:
        scale = size / longest
        shape = (max(1, round(width * scale)), max(1, round(height * scale)))
        return np.asarray(Image.fromarray(image).resize(shape, Image.Resampling.LANCZOS))
    factor = size // longest
    if factor >= 2:
        return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)
    return image


def square_thumbnail(image: np.ndarray, size: int) -> np.ndarray:
    """``(size, size, 3)`` ``uint8``: the image fitted inside a square and padded with black."""
    return np.asarray(ImageOps.pad(Image.fromarray(image), (size, size), Image.Resampling.LANCZOS, color=(0, 0, 0)))


@dataclass
class PairTile:
    """One cell of :func:`pair_grid`: an image, its distractor (``None`` when it cannot be shown)
    and the caption lines written under them."""

    anchor: np.ndarray
    distractor: np.ndarray | None
    caption: Sequence[str]


def pair_grid(
    pairs: Sequence[PairTile], columns: int = 2
) -> tuple[np.ndarray, list[dict[str, tuple[int, int, int, int]]]]:
    """Draw pairs side by side with their captions, ``columns`` pairs per row.

    Images are pasted unchanged (no resampling), so a region of the grid equals the tile given.

    Args:
        pairs: the cells, in reading order.
        columns: pairs per row (>= 1).

    Returns:
        The grid as ``(H, W, 3)`` ``uint8`` and, per pair, the boxes ``(left, top, right, bottom)``
        of its ``"anchor"`` and ``"distractor"`` tiles in grid pixels.

    Raises:
        ValueError: when ``pairs`` is empty.
    """
    if not pairs:
        raise ValueError("pair_grid needs at least one pair.")
    font = _font()
    line_height = _text_size(font, "Ag")[1] + 3
    tiles_w = tiles_h = caption_w = caption_lines = 0
    for pair in pairs:
        distractor = pair.distractor if pair.distractor is not None else pair.anchor
        tiles_w = max(tiles_w, pair.anchor.shape[1] + _GAP + distractor.shape[1])
        tiles_h = max(tiles_h, pair.anchor.shape[0], distractor.shape[0])
        caption_w = max([caption_w, *(_text_size(font, line)[0] for line in pair.caption)])
        caption_lines = max(caption_lines, len(pair.caption))
    cell_w = max(tiles_w, caption_w) + 2 * _PAD
    cell_h = tiles_h + caption_lines * line_height + 3 * _PAD
    columns = max(1, min(columns, len(pairs)))
    rows = -(-len(pairs) // columns)
    canvas = Image.new("RGB", (columns * cell_w, rows * cell_h), _BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    boxes: list[dict[str, tuple[int, int, int, int]]] = []
    for index, pair in enumerate(pairs):
        x0 = (index % columns) * cell_w + _PAD
        y0 = (index // columns) * cell_h + _PAD
        ah, aw = pair.anchor.shape[:2]
        canvas.paste(Image.fromarray(pair.anchor), (x0, y0))
        dx = x0 + aw + _GAP
        if pair.distractor is not None:
            dh, dw = pair.distractor.shape[:2]
            canvas.paste(Image.fromarray(pair.distractor), (dx, y0))
        else:
            dh, dw = ah, aw
            draw.rectangle((dx, y0, dx + dw - 1, y0 + dh - 1), fill=_PLACEHOLDER)
            draw.text((dx + 3, y0 + 3), "no image", font=font, fill=_CAPTION)
        boxes.append({"anchor": (x0, y0, x0 + aw, y0 + ah), "distractor": (dx, y0, dx + dw, y0 + dh)})
        for line_index, line in enumerate(pair.caption):
            draw.text((x0, y0 + tiles_h + _PAD + line_index * line_height), line, font=font, fill=_CAPTION)
    return np.asarray(canvas), boxes


def _blend(share: float) -> tuple[int, int, int]:
    colour = _LIGHT + (_DARK - _LIGHT) * min(max(share, 0.0), 1.0)
    return tuple(int(round(c)) for c in colour)  # type: ignore[return-value]


def confusion_figure(matrix: np.ndarray, class_names: Sequence[str], title: str = "") -> np.ndarray:
    """A confusion matrix as a picture: rows are true classes, columns predicted classes.

    Each cell shows its count; its colour is the count's share of the row (the recall of the
    diagonal), so rare classes read as clearly as common ones.

    Args:
        matrix: ``(C, C)`` counts, ``matrix[true, predicted]``.
        class_names: ``C`` names, written on both axes (long names are shortened).
        title: a line written above the matrix.

    Raises:
        ValueError: when ``matrix`` is not square or does not match ``class_names``.
    """
    matrix = np.asarray(matrix)
    num_classes = len(class_names)
    if matrix.ndim != 2 or matrix.shape != (num_classes, num_classes):
        raise ValueError(
            f"confusion matrix must be ({num_classes}, {num_classes}) for {num_classes} class names, "
            f"got {matrix.shape}."
        )
    font = _font()
    names = [_short(str(name)) for name in class_names]
    cell = max(34, _text_size(font, str(int(matrix.max(initial=0))))[0] + 12)
    name_w = max(_text_size(font, name)[0] for name in names) + 2 * _PAD
    line_h = _text_size(font, "Ag")[1] + 4
    header = [title, "rows: true class, columns: predicted class, colour: share of the row"]
    header = [line for line in header if line]
    axis_label_h = line_h + _PAD
    top = _PAD + len(header) * line_h + axis_label_h + name_w
    left = _PAD + line_h + name_w
    width = max(left + num_classes * cell + _PAD, max(_text_size(font, line)[0] for line in header) + 2 * _PAD)
    height = top + num_classes * cell + _PAD
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for index, line in enumerate(header):
        draw.text((_PAD, _PAD + index * line_h), line, font=font, fill=(0, 0, 0))
    predicted_y = _PAD + len(header) * line_h
    draw.text((left, predicted_y), "predicted", font=font, fill=(80, 80, 80))
    true_label = Image.new("RGBA", _text_size(font, "true"), (255, 255, 255, 0))
    ImageDraw.Draw(true_label).text((0, 0), "true", font=font, fill=(80, 80, 80, 255))
    true_label = true_label.rotate(90, expand=True)
    canvas.paste(true_label, (_PAD, top), true_label)
    row_sums = matrix.sum(axis=1)
    for column, name in enumerate(names):
        label = Image.new("RGBA", (name_w, line_h), (255, 255, 255, 0))
        ImageDraw.Draw(label).text((_PAD, 1), name, font=font, fill=(0, 0, 0, 255))
        label = label.rotate(90, expand=True)  # reads bottom to top, ending at the matrix
        canvas.paste(label, (left + column * cell + (cell - line_h) // 2, top - name_w), label)
    for row, name in enumerate(names):
        text_w, text_h = _text_size(font, name)
        draw.text((left - text_w - _PAD, top + row * cell + (cell - text_h) // 2), name, font=font, fill=(0, 0, 0))
        for column in range(num_classes):
            count = int(matrix[row, column])
            share = count / row_sums[row] if row_sums[row] else 0.0
            x, y = left + column * cell, top + row * cell
            draw.rectangle((x, y, x + cell - 1, y + cell - 1), fill=_blend(share), outline=(200, 200, 200))
            text = str(count)
            text_w, text_h = _text_size(font, text)
            colour = (255, 255, 255) if share > 0.5 else (0, 0, 0)
            draw.text((x + (cell - text_w) // 2, y + (cell - text_h) // 2), text, font=font, fill=colour)
    return np.asarray(canvas)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table, which TensorBoard's text dashboard renders as a table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(value).replace("|", "/") for value in row) + " |" for row in rows]
    return "\n".join(lines)
