"""Ignite handlers for MONAI engines: distractor mining, and TensorBoard views of what it does."""

from __future__ import annotations

from .distractor_mining import MINING_FIGURES, DistractorMiningHandler, from_engine_dict
from .shared import SharedHandler
from .tensorboard import (
    ConfusionMatrixTensorBoardHandler,
    DistractorPairsHandler,
    EmbeddingProjectorHandler,
    LearningRateTensorBoardHandler,
)

__all__ = [
    "MINING_FIGURES",
    "DistractorMiningHandler",
    "from_engine_dict",
    "SharedHandler",
    "ConfusionMatrixTensorBoardHandler",
    "DistractorPairsHandler",
    "EmbeddingProjectorHandler",
    "LearningRateTensorBoardHandler",
]
