"""What the package's handlers share: an output transform, argument checks, attaching once, writing on rank 0.

The counterpart of ``monai/handlers/utils.py``; each handler module keeps its own concept.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from monai.utils import IgniteInfo, convert_to_tensor, min_version, optional_import

idist, _ = optional_import("ignite", IgniteInfo.OPT_IMPORT_VERSION, min_version, "distributed")
Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:  # annotations only
    from ignite.engine import Engine

__all__ = [
    "attach_once",
    "attach_round",
    "check_class_names",
    "check_int",
    "datalist_sources",
    "from_engine_batched",
    "from_engine_dict",
    "is_rank_zero",
]


def from_engine_dict(keys: Sequence[str], first: bool = True) -> Callable[[Any], dict[str, Any]]:
    """Like ``monai.handlers.from_engine`` but returns ``{key: value}``, for loggers of several scalars.

    ``StatsHandler`` and ``TensorBoardStatsHandler`` log every entry of a dict returned by their
    ``output_transform``; after decollation the values of the first sample are the batch's.

    Args:
        keys: the output keys to log, e.g. ``["loss", "danil_distance", "danil_lambda"]``.
        first: read the first item of a decollated list. Default ``True``.

    Example:
        >>> from_engine_dict(["loss", "danil_lambda"])([{"loss": 0.7, "danil_lambda": 0.5, "pred": 1}])
        {'loss': 0.7, 'danil_lambda': 0.5}
    """

    def _wrapper(data: Any) -> dict[str, Any]:
        item = data[0] if first and isinstance(data, list) else data
        return {k: item[k] for k in keys if k in item}

    return _wrapper


def from_engine_batched(keys: Sequence[str]) -> Callable[[Any], tuple[torch.Tensor, ...]]:
    """Like ``monai.handlers.from_engine``, with each key's per-sample values stacked into one batch-first tensor.

    MONAI evaluators hold a decollated list of per-sample dicts; ignite metrics such as
    ``ignite.metrics.ConfusionMatrix`` take batch-first tensors (since ignite 0.5.1 they no longer
    unroll lists by default), and one update per batch is cheaper than one per sample anyway.

    Args:
        keys: the keys to read, e.g. ``["pred", "label"]``.

    Example:
        >>> decollated = [{"pred": torch.tensor([0.2, 0.8]), "label": torch.tensor(1)},
        ...               {"pred": torch.tensor([0.9, 0.1]), "label": torch.tensor(0)}]
        >>> pred, label = from_engine_batched(["pred", "label"])(decollated)
        >>> tuple(pred.shape), label.tolist()
        ((2, 2), [1, 0])
    """

    def _wrapper(data: Any) -> tuple[torch.Tensor, ...]:
        if isinstance(data, Mapping):
            return tuple(convert_to_tensor(data[k], track_meta=False) for k in keys)
        stacked = (torch.stack([torch.as_tensor(item[k]) for item in data]) for k in keys)
        return tuple(convert_to_tensor(values, track_meta=False) for values in stacked)

    return _wrapper


def is_rank_zero() -> bool:
    """Whether this process writes: rank 0 under ``torch.distributed``, or the only one."""
    # ignite's idist.get_rank: 0 without torch.distributed
    return idist.get_rank() == 0


def attach_once(engine: Engine, handlers: Iterable[tuple[Any, Callable[[Engine], None]]]) -> None:
    """Add each ``(event, handler)`` to ``engine`` unless it is there already, so ``attach`` is safe to call twice.

    Args:
        engine: the ignite engine.
        handlers: pairs of an ignite event (possibly filtered, ``Events.EPOCH_COMPLETED(every=2)``)
            and a callable taking the engine.

    Example:
        >>> from ignite.engine import Engine, Events
        >>> engine, seen = Engine(lambda e, b: None), []
        >>> for _ in range(2):
        ...     attach_once(engine, [(Events.EPOCH_COMPLETED, seen.append)])
        >>> _ = engine.run([0], max_epochs=1)
        >>> len(seen)
        1
    """
    for event, handler in handlers:
        if not engine.has_event_handler(handler, event):
            engine.add_event_handler(event, handler)


def attach_round(
    engine: Engine,
    start: Callable[[Engine], None],
    step: Callable[[Engine], None],
    end: Callable[[Engine], None],
    step_event: Any = None,
) -> None:
    """Attach a handler that works in rounds: ``start`` as an epoch starts, ``step`` per iteration, ``end`` as it ends.

    The shape of every handler here that collects over a round (an evaluator's pass, a training
    epoch) and writes at its end; attaching twice registers once (:func:`attach_once`).

    Args:
        engine: the ignite engine.
        start: called at ``EPOCH_STARTED``.
        step: called at ``step_event``.
        end: called at ``EPOCH_COMPLETED``.
        step_event: the per-iteration event, e.g. MONAI's ``IterationEvents.LOSS_COMPLETED``.
            Default ``None``: ``Events.ITERATION_COMPLETED``.
    """
    step_event = Events.ITERATION_COMPLETED if step_event is None else step_event
    attach_once(engine, [(Events.EPOCH_STARTED, start), (step_event, step), (Events.EPOCH_COMPLETED, end)])


def check_int(value: int, name: str, minimum: int = 1) -> int:
    """``value`` if it is an integer of at least ``minimum`` (not a bool).

    Raises:
        ValueError: otherwise, naming ``name`` and the value.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return value


def check_class_names(class_names: Sequence[str]) -> list[str]:
    """The class names as strings.

    Raises:
        ValueError: for fewer than two names.
    """
    names = [str(name) for name in class_names]
    if len(names) < 2:
        raise ValueError(f"class_names must name at least 2 classes, got {names}.")
    return names


def datalist_sources(datalist: Iterable[Mapping[str, Any]], image_key: str, id_key: str) -> dict[int, Any]:
    """``{sample id: image}`` from a MONAI datalist such as ``read_manifest`` returns.

    Raises:
        ValueError: for a row without ``image_key`` or ``id_key``, or an id that repeats.

    Example:
        >>> datalist_sources([{"image": "a.png", "id": 0}, {"image": "b.png", "id": 1}], "image", "id")
        {0: 'a.png', 1: 'b.png'}
    """
    sources: dict[int, Any] = {}
    for row, item in enumerate(datalist):
        if image_key not in item or id_key not in item:
            raise ValueError(
                f"datalist row {row} has keys {sorted(item)}; expected {image_key!r} and {id_key!r} "
                "(monai_danil.data.read_manifest writes both)."
            )
        sample_id = int(item[id_key])
        if sample_id in sources:
            raise ValueError(f"datalist repeats {id_key} {sample_id} (row {row}); ids must be unique.")
        sources[sample_id] = item[image_key]
    return sources
