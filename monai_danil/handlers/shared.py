"""An entry of a bundle's ``train#handlers`` for a handler defined elsewhere in the config."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from monai.utils import IgniteInfo, min_version, optional_import

if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import(
        "ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine", as_type="decorator"
    )

__all__ = ["SharedHandler"]


class SharedHandler:
    """Attaches a handler instance that the config also names elsewhere (a checkpoint, another handler).

    MONAI's ``ConfigWorkflow.check_properties`` and MONAI Label read every entry of ``train#handlers``
    and ``validate#handlers`` as a dict with a ``_target_`` (MONAI Label also inserts a
    ``CheckpointLoader`` at index 0), so a bare reference such as ``"@danil"`` cannot be listed there.
    The mining handler must still be one instance: the checkpoint's ``save_dict`` keeps its memory
    bank and :class:`~monai_danil.handlers.DistractorPairsHandler` reads what it mined. This entry
    carries the reference as a field and attaches it, so the handler is defined once, at the top
    level, and shared::

        "train": {"handlers": [{"_target_": "monai_danil.handlers.SharedHandler", "handler": "@danil"}]}

    Args:
        handler: any object with an ``attach(engine)`` method (an ignite handler in MONAI's style).

    Raises:
        TypeError: when ``handler`` has no callable ``attach``.

    Example:
        >>> from ignite.engine import Engine
        >>> class Counter:
        ...     def attach(self, engine):
        ...         self.engine = engine
        >>> counter, engine = Counter(), Engine(lambda e, b: None)
        >>> SharedHandler(counter).attach(engine)
        >>> counter.engine is engine
        True
    """

    def __init__(self, handler: Any) -> None:
        if not callable(getattr(handler, "attach", None)):
            raise TypeError(f"handler must have an attach(engine) method, got {type(handler).__name__}.")
        self.handler = handler

    def attach(self, engine: Engine) -> None:
        """Attach the shared handler (its own ``attach`` decides whether attaching twice is safe)."""
        self.handler.attach(engine)
