"""Distractor mining in feature space: the memory bank and the miner (torch only)."""

from __future__ import annotations

from .bank import MemoryBank
from .miner import DISTRACTOR_CLASSES, DISTRACTOR_SAMPLES, NEURON_WEIGHTINGS, DistractorBatch, DistractorMiner

__all__ = ["DISTRACTOR_CLASSES", "DISTRACTOR_SAMPLES", "NEURON_WEIGHTINGS", "DistractorBatch", "DistractorMiner", "MemoryBank"]
