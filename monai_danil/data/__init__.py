"""Data: dataset manifests, converters from public dataset layouts, and a SYNTHETIC demo set."""

from __future__ import annotations

from .manifest import (
    MANIFEST_COLUMNS,
    MANIFEST_NAME,
    atomic_output_dir,
    read_manifest,
    to_class_index,
    write_manifest,
)

__all__ = [
    "MANIFEST_COLUMNS",
    "MANIFEST_NAME",
    "atomic_output_dir",
    "read_manifest",
    "to_class_index",
    "write_manifest",
]
