"""Outputs that appear whole or not at all: a file or a folder written beside its target, then renamed into place.

A reader never sees a half-written file or dataset, and a failed or killed write leaves the earlier
one as it was (and at most a hidden temporary sibling, ``.<name>.<random>.tmp``, safe to delete).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

__all__ = ["atomic_file", "atomic_output_dir", "write_atomically"]


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Open a temporary file beside ``path`` for binary writing; on success it replaces ``path``.

    The file is flushed to disk (``fsync``) before the rename, so the rename is the only moment the
    new content becomes visible. It is created with the process's usual permissions. An error
    inside the ``with`` block removes the temporary file and leaves ``path`` as it was.

    Args:
        path: the file to write; its folder is created if needed.

    Yields:
        The open temporary file.

    Example:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "model.pt"
        >>> with atomic_file(target) as handle:
        ...     _ = handle.write(b"weights")
        >>> target.read_bytes()
        b'weights'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(temporary, "xb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_atomically(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8, line endings as given) to ``path`` through :func:`atomic_file`.

    Args:
        path: the file to write; its folder is created if needed.
        text: the whole content.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Example:
        >>> import tempfile
        >>> write_atomically(Path(tempfile.mkdtemp()) / "metrics.json", "{}\\n").read_text()
        '{}\\n'
    """
    with atomic_file(path) as handle:
        handle.write(text.encode("utf-8"))
    return Path(path)


def _check_output_free(out_dir: str | os.PathLike[str], overwrite: bool) -> None:
    """Raise ``FileExistsError`` unless ``out_dir`` is absent, empty, or may be overwritten."""
    out = Path(out_dir).absolute()
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"output {out} exists and is not a folder; expected a folder path.")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(
            f"output folder {out} exists and is not empty; pass overwrite=True (--overwrite) to replace it."
        )


def _fresh_sibling(out: Path, tag: str) -> Path:
    # a plain mkdir (not tempfile.mkdtemp, which is private 0700) so the result gets the usual umask
    while True:
        candidate = out.parent / f".{out.name}.{tag}-{uuid.uuid4().hex[:8]}"
        if not candidate.exists():
            return candidate


@contextlib.contextmanager
def atomic_output_dir(out_dir: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Build an output folder in a temporary sibling, and move it into place only on success.

    An error inside the ``with`` block removes the temporary folder and leaves ``out_dir`` as it
    was, so a failed run never leaves a half-written dataset behind.

    Args:
        out_dir: the folder to produce. Its parent is created if needed.
        overwrite: replace an existing non-empty ``out_dir``. Default ``False``: refuse. An existing
            empty folder is always replaced.

    Yields:
        The temporary folder to write into (same filesystem as ``out_dir``, so the final rename is
        atomic).

    Raises:
        FileExistsError: when ``out_dir`` exists, is not empty and ``overwrite`` is ``False``, or
            when it is a file.

    Example:
        >>> with atomic_output_dir("/tmp/demo") as tmp:  # doctest: +SKIP
        ...     (tmp / "manifest.csv").write_text("relative_path,label,split\\n")
    """
    out = Path(out_dir).absolute()
    _check_output_free(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = _fresh_sibling(out, "tmp")
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out.exists():
        # rename the old folder aside first, so the swap never leaves out_dir missing on an error
        old = _fresh_sibling(out, "old")
        os.rename(out, old)
    try:
        os.rename(tmp, out)
    except BaseException:
        if old is not None:
            os.rename(old, out)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
