"""Losses: the distractor-aware loss of DANIL."""

from __future__ import annotations

from .distractor_aware import DistractorAwareLoss, distractor_aware_loss, ordinal_margins, response_map_loss

__all__ = ["DistractorAwareLoss", "distractor_aware_loss", "ordinal_margins", "response_map_loss"]
