"""Ignite handlers for MONAI engines: distractor mining, TensorBoard views of what it does, resumable training."""

from __future__ import annotations

from .checkpoint import AtomicCheckpointSaver, AtomicDiskSaver, GradScalerState
from .distractor_mining import MINING_FIGURES, DistractorMiningHandler, from_engine_dict
from .seed import EpochSeedHandler, epoch_seed
from .shared import SharedHandler
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
    "SharedHandler",
    "ConfusionMatrixTensorBoardHandler",
    "DistractorPairsHandler",
    "EmbeddingProjectorHandler",
    "LearningRateTensorBoardHandler",
]
