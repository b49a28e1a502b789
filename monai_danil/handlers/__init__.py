"""Ignite handlers for MONAI engines: distractor mining, TensorBoard views of what it does, resumable
training, and the outputs of a trained bundle (predictions, the evaluation report, Grad-CAM overlays).

One module per handler, as in ``monai/handlers``; ``summary_writer`` holds the TensorBoard writer
they share and ``utils`` the output transform, checks and event wiring they share.
"""

from __future__ import annotations

from monai_danil.data.atomic import write_atomically

from .checkpoint import AtomicCheckpointSaver, AtomicDiskSaver, GradScalerState
from .confusion_matrix import ConfusionMatrixTensorBoardHandler
from .distractor_mining import MINING_FIGURES, DistractorMiningHandler
from .distractor_pairs import DistractorPairsHandler
from .embedding_projector import EmbeddingProjectorHandler
from .evaluation_report import EvaluationReportSaver, file_sha256
from .gradcam import GradCAMSaver, gradcam_overlay
from .learning_rate import LearningRateTensorBoardHandler
from .prediction_saver import PredictionSaver
from .seed import EpochSeedHandler, epoch_seed
from .shared import SharedHandler
from .summary_writer import NullSummaryWriter, rank_zero_summary_writer
from .utils import from_engine_batched, from_engine_dict

__all__ = [
    "AtomicCheckpointSaver",
    "AtomicDiskSaver",
    "EpochSeedHandler",
    "GradScalerState",
    "epoch_seed",
    "MINING_FIGURES",
    "DistractorMiningHandler",
    "from_engine_batched",
    "from_engine_dict",
    "EvaluationReportSaver",
    "file_sha256",
    "GradCAMSaver",
    "gradcam_overlay",
    "PredictionSaver",
    "write_atomically",
    "SharedHandler",
    "NullSummaryWriter",
    "rank_zero_summary_writer",
    "ConfusionMatrixTensorBoardHandler",
    "DistractorPairsHandler",
    "EmbeddingProjectorHandler",
    "LearningRateTensorBoardHandler",
]
