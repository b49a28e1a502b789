"""Data: dataset manifests, converters from public dataset layouts, and a SYNTHETIC demo set.

``read_manifest`` turns a ``manifest.csv`` (``relative_path,label,split``) into a MONAI datalist
and ``image_datalist`` a folder of images or a manifest without labels into one for inference
(``IMAGE_EXTENSIONS`` lists the image files looked for);
the converters (also ``python -m monai_danil.data --help``) write such manifests from the layouts
HAM10000, ISIC 2018, APTOS 2019, MedMNIST and class-per-folder trees ship in;
``make_synthetic_retina`` writes a SYNTHETIC (not medical) demo set for machines without data;
``check_training_splits`` stops a training whose splits could not train (fewer images than a batch);
``atomic_output_dir``, ``atomic_file`` and ``write_atomically`` write outputs that appear whole or not at all.
"""

from __future__ import annotations

from .atomic import atomic_file, atomic_output_dir, write_atomically
from .checks import check_training_splits
from .converters import (
    APTOS2019_GRADES,
    HAM10000_CLASSES,
    ISIC2018_COLUMNS,
    convert_aptos2019,
    convert_folders,
    convert_ham10000,
    convert_isic2018,
    convert_medmnist,
)
from .images import IMAGE_EXTENSIONS, find_images, image_datalist
from .manifest import (
    MANIFEST_COLUMNS,
    MANIFEST_NAME,
    evaluation_split,
    manifest_columns,
    read_manifest,
    to_class_index,
    write_manifest,
)
from .splits import stratified_split
from .synthetic import draw_synthetic_fundus, make_synthetic_retina

__all__ = [
    "APTOS2019_GRADES",
    "HAM10000_CLASSES",
    "IMAGE_EXTENSIONS",
    "ISIC2018_COLUMNS",
    "MANIFEST_COLUMNS",
    "MANIFEST_NAME",
    "atomic_file",
    "atomic_output_dir",
    "check_training_splits",
    "convert_aptos2019",
    "convert_folders",
    "convert_ham10000",
    "convert_isic2018",
    "convert_medmnist",
    "draw_synthetic_fundus",
    "evaluation_split",
    "find_images",
    "image_datalist",
    "make_synthetic_retina",
    "manifest_columns",
    "read_manifest",
    "stratified_split",
    "to_class_index",
    "write_atomically",
    "write_manifest",
]
