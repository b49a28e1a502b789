"""Ignite handlers for MONAI engines: distractor mining, TensorBoard views of what it does, resumable
training, and the outputs of a trained bundle (predictions, the evaluation report, Grad-CAM overlays)."""

from __future__ import annotations

from .checkpoint import AtomicCheckpointSaver, AtomicDiskSaver, GradScalerState
from .distractor_mining import MINING_FIGURES, DistractorMiningHandler, from_engine_dict
from .evaluation_report import EvaluationReportSaver, file_sha256
from .gradcam import GradCAMSaver, gradcam_overlay
from .prediction_saver import PredictionSaver, write_atomically
from .seed import EpochSeedHandler, epoch_seed
from .shared import SharedHandler
from .summary_writer import NullSummaryWriter, rank_zero_summary_writer
from .tensorboard import (
    ConfusionMatrixTensorBoardHandler,
    DistractorPairsHandler,
    EmbeddingProjectorHandler,
    LearningRateTensorBoardHandler,
)

__all__ = [
    "AtomicCheckpointSaver",
    "AtomicDiskSaver",
    "EpochSeedHandler",
    "GradScalerState",
    "epoch_seed",
    "MINING_FIGURES",
    "DistractorMiningHandler",
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
