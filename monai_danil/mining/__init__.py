"""Distractor mining: in feature space (the memory bank and the miner), and the response-map reading (torch only)."""

from __future__ import annotations

from .bank import MemoryBank
from .miner import (
    DISTRACTOR_CLASSES,
    DISTRACTOR_SAMPLES,
    NEURON_WEIGHTINGS,
    SOFT_WEIGHTINGS,
    DistractorBatch,
    DistractorMiner,
    DistractorTerms,
)
from .response import RESPONSE_READINGS, ResponseMapBatch, ResponseMapMiner, class_response_maps

__all__ = [
    "DISTRACTOR_CLASSES",
    "DISTRACTOR_SAMPLES",
    "NEURON_WEIGHTINGS",
    "RESPONSE_READINGS",
    "SOFT_WEIGHTINGS",
    "DistractorBatch",
    "DistractorMiner",
    "DistractorTerms",
    "MemoryBank",
    "ResponseMapBatch",
    "ResponseMapMiner",
    "class_response_maps",
]
