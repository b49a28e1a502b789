"""MONAI Label app: this project's bundles (skin, retina, pathology) served and trained as classifiers.

Start it with MONAI Label's own command, from the repository root, in the label environment::

    monailabel start_server --app label_app --studies DIR --host 127.0.0.1 --port 8000

``--conf`` settings (``--conf NAME VALUE``, each optional):

- ``models``: comma-separated tasks to serve, default ``all`` (``skin,retina,pathology``). A
  datastore holds the images of one task: the tasks' files share names (``train_0000.png``) and a
  model trains on every image that has a final label, so serve one task per studies folder
  (``--conf models skin``) unless the images are named apart and only one task's are labelled.
- ``bundles``: the folder holding the bundles, default ``bundles/`` beside this app (only read).
- ``model_dir``: where the app keeps its working copy of each bundle (``<model_dir>/<task>``: the
  configs, the trained ``models/``, the TensorBoard ``logs/``), default ``<studies>/model``, so that
  the weights trained on a datastore's labels stay with that datastore.

The app needs no network: it serves local bundles only (no model-zoo look-up, no SAM2 weights).
See docs/monailabel.md for the whole walk-through.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from fastapi import HTTPException
from monailabel.config import settings
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.train import TrainTask
import monai_danil

from lib.bundles import TASKS
from lib.configs import DanilBundle
from lib.datastore import ClassLabelDatastore
from lib.infers import ImageError

logger = logging.getLogger(__name__)


class DanilApp(MONAILabelApp):
    """Serves and trains the bundles of ``bundles/`` as MONAI Label classification models.

    Args:
        app_dir: this folder (MONAI Label passes it).
        studies: the studies folder (``--studies``).
        conf: the ``--conf`` settings, see the module docstring.

    Raises:
        ValueError: when ``models`` names a task that is not one of skin, retina, pathology.

    Example:
        >>> app = DanilApp("label_app", "studies/skin", {"models": "skin"})  # doctest: +SKIP
        >>> app.infer({"model": "skin", "image": "ISIC_0024306"})["params"]["prediction"][4]  # doctest: +SKIP
        {'idx': 4, 'label': 'mel', 'score': 0.12...}
    """

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        requested = [m.strip() for m in conf.get("models", "all").split(",") if m.strip()]
        unknown = [m for m in requested if m != "all" and m not in TASKS]
        if unknown or not requested:
            raise ValueError(
                f"--conf models {conf.get('models')!r}: expected 'all' or a comma-separated subset of {TASKS}."
            )
        names = TASKS if "all" in requested else [t for t in TASKS if t in requested]

        local = not studies.startswith(("http://", "https://"))
        bundles = conf.get("bundles", os.path.join(os.path.dirname(os.path.abspath(app_dir)), "bundles"))
        self.model_dir = conf.get("model_dir", os.path.join(studies if local else app_dir, "model"))
        self.models: dict[str, DanilBundle] = {}
        for name in names:
            self.models[name] = DanilBundle()
            self.models[name].init(name, self.model_dir, conf, None, bundle_source=os.path.join(bundles, name))
        logger.info(f"+++ serving {list(self.models)} from {bundles}; working copies in {self.model_dir}")

        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name=f"monai-danil ({monai_danil.__version__})",
            description="DANIL classifiers: skin lesions, diabetic-retinopathy grades, colorectal histology",
            version=monai_danil.__version__,
        )

    def init_datastore(self) -> Datastore:
        if self.studies.startswith(("http://", "https://")):
            return super().init_datastore()
        return ClassLabelDatastore(
            self.studies,
            {name: config.labels for name, config in self.models.items()},
            {name: config.label_aliases for name, config in self.models.items()},
            extensions=settings.MONAI_LABEL_DATASTORE_FILE_EXT,
            auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
            read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY,
        )

    def init_infers(self) -> dict[str, InferTask]:
        return {name: config.infer() for name, config in self.models.items()}

    def init_trainers(self) -> dict[str, TrainTask]:
        return {name: config.trainer() for name, config in self.models.items()}

    def _unknown_model(self, model: Any) -> HTTPException:
        return HTTPException(
            status_code=404, detail=f"no model {model!r} on this server; it serves {', '.join(self.models)}."
        )

    def infer(self, request: dict[str, Any], datastore: Datastore | None = None) -> dict[str, Any]:
        model = request.get("model")
        if model not in self._infers:
            raise self._unknown_model(model)
        image = request.get("image")
        datastore = datastore if datastore else self.datastore()
        if isinstance(image, str) and not os.path.exists(image) and not datastore.get_image_uri(image):
            raise HTTPException(
                status_code=404,
                detail=f"no image {image!r} in the datastore {self.studies}; the ids are listed by "
                "GET /datastore/?output=all.",
            )
        try:
            return super().infer(request, datastore)
        except ImageError as error:
            raise HTTPException(status_code=422, detail=str(error)) from None

    def bundle_path(self, model: str | None) -> str | None:
        # MONAI Label asks this in the server process before it starts a training subprocess: the
        # one place where POST /train/<unknown> can be answered, instead of a task that fails later
        if model is not None and model not in self._trainers:
            raise self._unknown_model(model)
        return super().bundle_path(model)
