"""One ``TaskConfig`` for this project's bundles, parametrised by the task's name."""

from __future__ import annotations

import os
from typing import Any

from monailabel.interfaces.config import TaskConfig
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.train import TrainTask
from monai_danil.bundle import class_names

from lib.bundles import label_aliases, prepare_bundle
from lib.infers import ClassificationInferTask
from lib.trainers import ClassificationTrainTask

__all__ = ["DanilBundle"]


class DanilBundle(TaskConfig):
    """A bundle of this project served as a classification model and trained from the datastore's labels.

    ``init`` takes, beside MONAI Label's arguments, ``bundle_source``: the repository's
    ``bundles/<name>``; the working copy is ``<model_dir>/<name>``. After ``init``, ``labels`` holds
    the class names (index = class number) and ``label_aliases`` the bundle's extra spellings.

    Example:
        >>> config = DanilBundle()
        >>> config.init("skin", "studies/skin/model", {}, None, bundle_source="bundles/skin")  # doctest: +SKIP
        >>> config.labels  # doctest: +SKIP
        ['akiec', 'bcc', 'bkl', 'df', 'mel', 'nv', 'vasc']
    """

    def init(self, name: str, model_dir: str, conf: dict[str, str], planner: Any, **kwargs: Any) -> None:
        super().init(name, model_dir, conf, planner, **kwargs)
        self.bundle_path = prepare_bundle(kwargs["bundle_source"], os.path.join(model_dir, name))
        self.labels = class_names(None, self.bundle_path)
        self.label_aliases = label_aliases(self.bundle_path)

    def infer(self) -> InferTask:
        return ClassificationInferTask(self.bundle_path, self.conf)

    def trainer(self) -> TrainTask:
        return ClassificationTrainTask(self.bundle_path, self.conf)

