"""Checkpoints a killed training can resume from: atomic files, and the state MONAI's saver leaves out."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monai.handlers import CheckpointSaver
from monai.utils import IgniteInfo, min_version, optional_import

from monai_danil.data.atomic import atomic_file

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
    from ignite.handlers import Checkpoint, DiskSaver
else:
    Engine, _ = optional_import(
        "ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine", as_type="decorator"
    )
    Checkpoint, _ = optional_import("ignite.handlers", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Checkpoint")
    DiskSaver, _ = optional_import(
        "ignite.handlers", IgniteInfo.OPT_IMPORT_VERSION, min_version, "DiskSaver", as_type="base"
    )

__all__ = ["AtomicCheckpointSaver", "AtomicDiskSaver", "GradScalerState"]


class AtomicDiskSaver(DiskSaver):
    """ignite's ``DiskSaver`` that writes a temporary file beside the target and renames it into place.

    A process killed while saving leaves the previous file whole under the final name (and at most a
    ``.<name>.<random>.tmp`` beside it, never read): the file is written by
    :func:`~monai_danil.data.atomic_file`, flushed to disk before the rename, with the process's
    usual permissions (ignite's own atomic mode makes it owner-only).
    MONAI's ``CheckpointSaver`` writes in place (``atomic=False``), so a kill during a save leaves a
    truncated ``model.pt`` or ``checkpoint.pt``.

    Args:
        dirname: the folder of the checkpoints (created if missing).
        filename: a fixed name for every file saved, replacing the name ignite makes up from the
            score (``checkpoint.pt``, ``model.pt``). ``remove`` of a fixed name does nothing: the
            next save replaces the file atomically, whereas removing it first would leave a moment
            with no file at all. Default ``None``: ignite's names, removed as ignite asks.
        kwargs: passed to ``torch.save``.

    Example:
        >>> saver = AtomicDiskSaver("models", filename="checkpoint.pt")
        >>> saver({"network": net.state_dict()}, "ignored_name.pt")  # writes models/checkpoint.pt
    """

    def __init__(self, dirname: str | os.PathLike, filename: str | None = None, **kwargs: Any) -> None:
        super().__init__(dirname=dirname, atomic=True, require_empty=False, **kwargs)
        self.filename = filename

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        super().__call__(checkpoint, self.filename or filename, metadata)

    def remove(self, filename: str) -> None:
        if self.filename is None:
            super().remove(filename)

    def _save_func(self, checkpoint: Mapping, path: Path, func: Callable) -> None:
        with atomic_file(path) as handle:
            func(checkpoint, handle, **self.kwargs)


class AtomicCheckpointSaver(CheckpointSaver):
    """MONAI's ``CheckpointSaver`` with atomic files, one resumable file, and a checkpointable best score.

    Three additions to ``monai.handlers.CheckpointSaver``, whose arguments it takes as they are:

    - every file (final, key-metric, interval) is written by an :class:`AtomicDiskSaver`: a kill
      during a save never leaves a partial ``model.pt`` or ``checkpoint.pt``;
    - ``interval_filename`` gives the interval checkpoints a fixed name, each replacing the last, and
      ``iteration_interval`` also saves that checkpoint every N iterations: with
      ``save_interval=1, interval_filename="checkpoint.pt", final_filename="checkpoint.pt"`` one
      file always holds the latest state, written at the end of every epoch (and every N iterations);
    - :meth:`state_dict` / :meth:`load_state_dict` keep the best-so-far key metric: the tracking list
      of the key-metric checkpoint (what MONAI's ``key_metric_save_state`` would write into the
      model file itself, which would then no longer be a plain ``state_dict``) and the attached
      engine's ``best_metric`` and ``best_metric_epoch``. Put this saver in the training checkpoint's
      ``save_dict``, and a resumed training never replaces ``model.pt`` with a worse epoch.

    Args:
        save_dir: the folder of the checkpoints.
        save_dict: the objects to save, as for ``CheckpointSaver``.
        interval_filename: fixed file name of the interval checkpoints. Default ``None``: MONAI's
            names (``checkpoint_epoch=N.pt``), ``n_saved`` of them kept.
        iteration_interval: also save the interval checkpoint every N iterations (0: never). A
            resume from such a mid-epoch checkpoint continues at that iteration but restarts the
            epoch's data order, so unlike a resume from an epoch checkpoint it does not repeat the
            uninterrupted run exactly. Default 0.
        kwargs: every other argument of ``monai.handlers.CheckpointSaver`` (``save_final``,
            ``final_filename``, ``save_key_metric``, ``key_metric_filename``, ``epoch_level``,
            ``save_interval``, ``n_saved``, ...).

    Raises:
        ValueError: for a negative ``iteration_interval``.

    Example:
        >>> saver = AtomicCheckpointSaver(
        ...     save_dir="models", save_dict={"network": net, "optimizer": opt, "trainer": trainer},
        ...     save_final=True, final_filename="checkpoint.pt", save_interval=1, interval_filename="checkpoint.pt")
        >>> saver.attach(trainer)
    """

    def __init__(
        self,
        save_dir: str,
        save_dict: dict,
        interval_filename: str | None = None,
        iteration_interval: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(save_dir=save_dir, save_dict=save_dict, **kwargs)
        if int(iteration_interval) < 0:
            raise ValueError(f"iteration_interval must be >= 0, got {iteration_interval}.")
        self.iteration_interval = int(iteration_interval)
        # MONAI builds its in-place _DiskSaver inside __init__; the saving policy stays MONAI's, the writing is atomic
        for checkpoint, filename in (
            (self._final_checkpoint, self._final_filename),
            (self._key_metric_checkpoint, kwargs.get("key_metric_filename")),
            (self._interval_checkpoint, interval_filename),
        ):
            if checkpoint is not None:
                checkpoint.save_handler = AtomicDiskSaver(save_dir, filename)
        self._iteration_checkpoint: Checkpoint | None = None
        if self.iteration_interval:
            self._iteration_checkpoint = Checkpoint(
                to_save=self.save_dict,
                save_handler=AtomicDiskSaver(save_dir, interval_filename),
                filename_prefix=kwargs.get("file_prefix", ""),
                score_function=lambda engine: engine.state.iteration,
                score_name="iteration",
                n_saved=kwargs.get("n_saved"),
            )
        self._engine: Engine | None = None
        self._best: tuple[float, int] | None = None

    def attach(self, engine: Engine) -> None:
        """Attach as ``CheckpointSaver`` does, plus the iteration checkpoint; remembers ``engine`` for its best score."""
        super().attach(engine)
        if self._iteration_checkpoint is not None:
            engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.iteration_interval), self._iteration_checkpoint)
        self._engine = engine
        self._restore_best()

    def state_dict(self) -> dict[str, Any]:
        """The best-so-far key metric: ``{"_saved": [(score, filename)], "best_metric", "best_metric_epoch"}``.

        Plain floats, ints and strings (loadable with ``weights_only=True``); empty without ``save_key_metric``.
        """
        if self._key_metric_checkpoint is None:
            return {}
        state: dict[str, Any] = {
            "_saved": [(float(score), str(name)) for score, name in self._key_metric_checkpoint.state_dict()["_saved"]]
        }
        engine_state = getattr(self._engine, "state", None)
        if engine_state is not None and hasattr(engine_state, "best_metric"):
            state["best_metric"] = float(engine_state.best_metric)
            state["best_metric_epoch"] = int(engine_state.best_metric_epoch)
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore what :meth:`state_dict` returned (the tracking list, then the engine's best score)."""
        if not state_dict:
            return
        super().load_state_dict({"_saved": [tuple(item) for item in state_dict["_saved"]]})
        if "best_metric" in state_dict:
            self._best = (float(state_dict["best_metric"]), int(state_dict["best_metric_epoch"]))
            self._restore_best()

    def _restore_best(self) -> None:
        # MONAI's Workflow keeps its own best score for its log ("Key metric: ... best value"); a resume restores it too
        if self._best is not None and self._engine is not None:
            self._engine.state.best_metric, self._engine.state.best_metric_epoch = self._best


class GradScalerState:
    """The AMP loss scale of a MONAI trainer as a checkpoint entry.

    ``SupervisedTrainer.run`` creates a fresh ``GradScaler`` at every run, so the scaler cannot be
    named in a config's ``save_dict`` directly: this entry reads and writes whatever scaler the
    trainer holds when the checkpoint is saved or loaded (``CheckpointLoader`` loads at
    ``STARTED``, after the scaler was made). Without AMP it saves ``{}`` and loads nothing.

    Args:
        trainer: the trainer whose ``scaler`` to keep.

    Example:
        >>> save_dict = {"network": net, "trainer": trainer, "scaler": GradScalerState(trainer)}
    """

    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        scaler = getattr(self.trainer, "scaler", None)
        return scaler.state_dict() if scaler is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        scaler = getattr(self.trainer, "scaler", None)
        if scaler is not None and state_dict:
            scaler.load_state_dict(state_dict)
