"""A bundle of this project trained by MONAI Label from the datastore's class labels."""

from __future__ import annotations

import logging
from typing import Any

from monailabel.interfaces.datastore import Datastore
from monailabel.tasks.train.bundle import BundleTrainTask
from monai_danil.bundle import class_names
from monai_danil.data import stratified_split

from lib.bundles import label_aliases
from lib.labels import LabelError, class_index, read_label_value

__all__ = ["ClassificationTrainTask"]

logger = logging.getLogger(__name__)


class ClassificationTrainTask(BundleTrainTask):
    """Runs the bundle's own ``train.json`` on the images that have a ``final`` class label.

    What MONAI Label 0.8.5 does to a bundle, and what this task does instead:

    - its datalist holds label *file paths*: each label file (``{"label": "mel"}``) is read into the
      class index, by class name, index or the bundle's ``label_aliases``, and every row gets the
      integer ``id`` that ``DistractorPairsHandler`` and the embedding projector need;
    - its validation split is unstratified and unshuffled: the split is ``stratified_split`` (per
      class, shuffled with the bundle's ``seed``), so every class with two or more labelled images
      is on both sides; ``val_split`` must lie strictly between 0 and 1, since the bundles keep
      ``models/model.pt`` by the validation metric;
    - it overrides ``train#trainer#max_epochs`` only: ``epochs`` follows, so the cosine schedule's
      ``T_max`` and DANIL's warm-up fit the requested run;
    - ``batch_size`` is cut to the number of training images (the loader drops the last partial
      batch, so a batch of 64 over 20 images would run no iteration), and ``val_interval`` to the
      number of epochs, so that even a one-epoch run validates and writes ``models/model.pt``;
    - ``pretrained: false`` (start from the network's initial weights) crashes MONAI Label's own
      checkpoint loading; here it skips loading ``models/model.pt``;
    - multi-GPU training needs a ``multi_gpu_train.json`` these bundles do not have, and MONAI
      Label would then skip training silently: training runs on one device.

    Args:
        path: the bundle folder MONAI Label trains (the app's working copy).
        conf: the server's ``--conf`` settings.

    Example:
        >>> task = ClassificationTrainTask("studies/model/skin", {})  # doctest: +SKIP
        >>> task({"model": "skin", "max_epochs": 1, "device": "cpu"}, app.datastore())  # doctest: +SKIP
    """

    def __init__(self, path: str, conf: dict[str, str]) -> None:
        super().__init__(path, conf, load_strict=True)
        self.class_names = class_names(None, path)
        self.label_aliases = label_aliases(path)

    def _fetch_datalist(self, request: dict[str, Any], datastore: Datastore) -> list[dict[str, Any]]:
        datalist = []
        for index, item in enumerate(datastore.datalist()):
            try:
                label = class_index(read_label_value(item["label"]), self.class_names, self.label_aliases)
            except LabelError as error:
                raise LabelError(
                    f"{item['label']} (the final label of {item['image']}): {error} A model trains on every "
                    "labelled image of its datastore: keep one task's images per studies folder."
                ) from None
            datalist.append({"image": item["image"], "label": label, "id": index})
        if not datalist:
            raise ValueError(
                "no image in the datastore has a final label: store one per image first "
                "(PUT /datastore/label?image=ID&tag=final with a file holding {\"label\": \"<class name>\"})."
            )
        return datalist

    def _partition_datalist(
        self, datalist: list[dict[str, Any]], request: dict[str, Any], shuffle: bool = False
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        val_split = float(request.get("val_split", 0.2))
        if not 0.0 < val_split < 1.0:
            raise ValueError(
                f"val_split is {val_split}; this app needs 0 < val_split < 1: the bundles keep models/model.pt "
                "by the validation metric."
            )
        seed = int(self.bundle_config.get("seed", 0))
        sides = stratified_split([item["label"] for item in datalist], val_fraction=val_split, seed=seed)
        train = [item for item, side in zip(datalist, sides) if side == "train"]
        val = [item for item, side in zip(datalist, sides) if side == "val"]
        counts = {name: sum(item["label"] == i for item in datalist) for i, name in enumerate(self.class_names)}
        if not val or len(train) < 2:
            raise ValueError(
                f"{len(datalist)} labelled image(s) ({counts}) leave {len(train)} for training and {len(val)} for "
                "validation; label at least two images of one class and three in all."
            )
        logger.info(f"labelled images per class: {counts}; stratified split: {len(train)} train, {len(val)} val")
        return train, val

    def _update_overrides(self, overrides: dict[str, Any]) -> dict[str, Any]:
        epochs = int(overrides[self.const.key_train_trainer_max_epochs()])
        if epochs < 1:
            raise ValueError(f"max_epochs is {epochs}; expected at least 1.")
        train = overrides[self.const.key_train_dataset_data()]
        overrides[self.const.key_train_trainer_max_epochs()] = epochs
        overrides["epochs"] = epochs
        overrides["batch_size"] = min(int(self.bundle_config.get_parsed_content("batch_size")), len(train))
        overrides["val_interval"] = min(int(self.bundle_config.get_parsed_content("val_interval")), epochs)
        logger.info(
            f"bundle overrides: epochs {epochs}, batch_size {overrides['batch_size']}, "
            f"val_interval {overrides['val_interval']}"
        )
        return overrides

    def _load_checkpoint(self, model_pytorch: str, pretrained: bool, train_handlers: list[dict[str, Any]]) -> None:
        # MONAI Label 0.8.5 calls os.path.exists(None) for pretrained=false, a TypeError
        if pretrained:
            super()._load_checkpoint(model_pytorch, pretrained, train_handlers)

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any]:
        return super().__call__({**request, "multi_gpu": False}, datastore)
