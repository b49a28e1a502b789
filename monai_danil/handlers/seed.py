"""Random streams that depend on (seed, epoch) only, so a resumed training repeats an uninterrupted one."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist
from monai.data.utils import set_rnd
from monai.utils import IgniteInfo, min_version, optional_import

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import(
        "ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine", as_type="decorator"
    )

__all__ = ["EpochSeedHandler", "epoch_seed"]


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """A 32-bit seed mixed from ``(seed, epoch, rank)`` by numpy's ``SeedSequence`` (nearby values give unrelated streams).

    Example:
        >>> epoch_seed(0, 1) == epoch_seed(0, 1) != epoch_seed(0, 2)
        True
    """
    return int(np.random.SeedSequence([int(seed), int(epoch), int(rank)]).generate_state(1)[0])


class EpochSeedHandler:
    """Reseeds every random stream of a training at the start of each epoch from ``(seed, epoch)``.

    ``monai.utils.set_determinism`` seeds a run once, at its start, so the random state at epoch
    ``e`` depends on everything drawn before it. A training resumed from the checkpoint of epoch
    ``e - 1`` starts with other random states, and its data order and augmentations differ from the
    uninterrupted run's. At ``EPOCH_STARTED`` this handler sets, from :func:`epoch_seed`:

    - Python's ``random``, numpy's global and torch's global generators (CPU and CUDA): the
      shuffling of ``RandomSampler`` and ``WeightedRandomSampler``, the seeds of loader workers, and
      anything the model draws (dropout);
    - the data loader's and its sampler's own ``generator``, where they have one;
    - the random transforms of the loader's dataset (``monai.data.utils.set_rnd``, what MONAI's
      ``DataLoader`` does once at construction; with workers, MONAI's ``worker_init_fn`` reseeds the
      workers' copies from the torch seed set here).

    ignite creates an epoch's data iterator after ``EPOCH_STARTED``, so the order of every epoch is a
    function of ``(seed, epoch)`` alone, in a resumed run as in an uninterrupted one. Under
    ``torch.distributed`` the rank is mixed in too, so that ranks do not draw the same augmentations
    for their different samples; ``DistributedSampler`` keeps its own ``(seed, epoch)`` order (MONAI
    calls its ``set_epoch``).

    Args:
        seed: the run's seed (the bundle's ``seed``); ``None`` leaves the random streams alone.

    Raises:
        ValueError: for a negative seed.

    Example:
        >>> EpochSeedHandler(seed=0).attach(trainer)  # or list it in the trainer's ``train_handlers``
    """

    def __init__(self, seed: int | None) -> None:
        if seed is not None and int(seed) < 0:
            raise ValueError(f"seed must be >= 0 or None, got {seed}.")
        self.seed = None if seed is None else int(seed)

    def attach(self, engine: Engine) -> None:
        """Reseed at every ``EPOCH_STARTED`` of ``engine`` (idempotent)."""
        if not engine.has_event_handler(self, Events.EPOCH_STARTED):
            engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        if self.seed is None:
            return
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        seed = epoch_seed(self.seed, engine.state.epoch, rank)
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        loader: Any = engine.state.dataloader
        for generator in (getattr(loader, "generator", None), getattr(getattr(loader, "sampler", None), "generator", None)):
            if isinstance(generator, torch.Generator):
                generator.manual_seed(seed)
        dataset = getattr(loader, "dataset", None)
        if dataset is not None:
            set_rnd(dataset, seed)
