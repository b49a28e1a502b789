"""Losses: the distractor-aware loss of DANIL."""

from __future__ import annotations

from .distractor_aware import DistractorAwareLoss, distractor_aware_loss, ordinal_margins

__all__ = ["DistractorAwareLoss", "distractor_aware_loss", "ordinal_margins"]
