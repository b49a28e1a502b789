"""ResumableCosineLR: torch's cosine annealing in closed form, re-planned when a resume changes the total."""

from __future__ import annotations

import io
import math

import pytest
import torch

from monai_danil.optimizers import ResumableCosineLR


def _optimizer(lr: float = 0.01) -> torch.optim.Optimizer:
    return torch.optim.AdamW(torch.nn.Linear(3, 2).parameters(), lr=lr)


def _rates(schedule: ResumableCosineLR, optimizer: torch.optim.Optimizer, steps: int) -> list[float]:
    rates = [optimizer.param_groups[0]["lr"]]
    for _ in range(steps):
        optimizer.step()
        schedule.step()
        rates.append(optimizer.param_groups[0]["lr"])
    return rates


def test_matches_torch_cosine_annealing_then_holds_at_eta_min():
    ours, theirs = _optimizer(), _optimizer()
    mine = _rates(ResumableCosineLR(ours, total_epochs=6, eta_min=1e-4), ours, 8)
    torch_schedule = torch.optim.lr_scheduler.CosineAnnealingLR(theirs, T_max=6, eta_min=1e-4)
    reference = _rates(torch_schedule, theirs, 6)
    assert mine[:7] == pytest.approx(reference, abs=1e-12)
    assert mine[6:] == pytest.approx([1e-4] * 3, abs=1e-15)  # torch's would climb back after T_max


def test_a_resume_with_another_total_replans_at_once():
    optimizer = _optimizer()
    schedule = ResumableCosineLR(optimizer, total_epochs=4)
    _rates(schedule, optimizer, 4)  # a finished 4-epoch run: learning rate 0
    buffer = io.BytesIO()
    torch.save({"optimizer": optimizer.state_dict(), "lr_scheduler": schedule.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    assert saved["optimizer"]["param_groups"][0]["lr"] == 0.0
    # resumed with 8 epochs: the optimizer first (its saved rate is 0), then the schedule, which re-plans
    resumed_optimizer = _optimizer()
    resumed = ResumableCosineLR(resumed_optimizer, total_epochs=8)
    resumed_optimizer.load_state_dict(saved["optimizer"])
    resumed.load_state_dict(saved["lr_scheduler"])
    assert resumed.last_epoch == 4 and resumed.total_epochs == 8
    planned_from_start = [0.01 * 0.5 * (1 + math.cos(math.pi * e / 8)) for e in range(4, 9)]
    assert _rates(resumed, resumed_optimizer, 4) == pytest.approx(planned_from_start, abs=1e-12)
    # resumed with the same total: the run continues exactly where it was
    same_optimizer = _optimizer()
    same = ResumableCosineLR(same_optimizer, total_epochs=4)
    same_optimizer.load_state_dict(saved["optimizer"])
    same.load_state_dict(saved["lr_scheduler"])
    assert same_optimizer.param_groups[0]["lr"] == 0.0 and same.get_last_lr() == [0.0]


def test_bad_arguments():
    with pytest.raises(ValueError, match="total_epochs"):
        ResumableCosineLR(_optimizer(), total_epochs=0)
    with pytest.raises(ValueError, match="eta_min"):
        ResumableCosineLR(_optimizer(), total_epochs=3, eta_min=-1.0)
