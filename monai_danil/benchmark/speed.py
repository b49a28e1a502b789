"""The speed benchmark: what DANIL's mining and distractor term cost per MONAI ``SupervisedTrainer`` step.

Two trainers share one network, optimizer and in-memory batches: ``ce`` (the
``DistractorAwareLoss`` without mining context, i.e. cross-entropy) and ``danil`` (the same loss with
a ``DistractorMiningHandler`` attached and its bank full). Their timed runs alternate, so a change
in machine load hits both alike, and each rate is the median over repeats.
"""

from __future__ import annotations

import logging
import os
import resource
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigParser
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedTrainer

from monai_danil.data import read_manifest
from monai_danil.handlers import DistractorMiningHandler
from monai_danil.losses import DistractorAwareLoss
from monai_danil.mining import RESPONSE_READINGS, DistractorMiner, ResponseMapMiner
from monai_danil.networks import create_network

from .environment import code_state, environment

__all__ = ["AMP_MODES", "READINGS", "SpeedBenchmark"]

logger = logging.getLogger(__name__)

AMP_MODES = ("none", "bf16", "fp16")
#: ``feature``: the memory-bank miner (DistractorMiner); the others: the response-map miner's readings
READINGS = ("feature", *RESPONSE_READINGS)
_GIB = 1024.0**3


class _PeakMemory:
    """Peak memory of one measured stretch: the CUDA allocator on GPU, the process RSS on CPU.

    On Linux the RSS high-water mark is reset through ``/proc/self/clear_refs`` so each stretch gets its
    own peak; where that is refused the peak is the process's lifetime maximum (``source`` says so).
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        if device.type == "cuda":
            self.source = "cuda_max_memory_allocated"
        elif self._reset_rss():
            self.source = "process_rss_peak"
        else:
            self.source = "process_rss_lifetime_peak"

    @staticmethod
    def _reset_rss() -> bool:
        try:
            with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
                handle.write("5")
            return True
        except OSError:
            return False

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self.source == "process_rss_peak":
            self._reset_rss()

    def peak_gib(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / _GIB
        if self.source == "process_rss_peak":
            with open("/proc/self/status", encoding="ascii") as handle:
                for line in handle:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) * 1024 / _GIB
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / _GIB


def _use_tap(handler: DistractorMiningHandler, on: bool) -> None:
    # the tap hooks the shared network: on for danil runs only, so a ce run is a plain step
    if on:
        handler.tap.attach()
    else:
        handler.tap.detach()


class SpeedBenchmark:
    """Images per second of a plain and a DANIL ``SupervisedTrainer`` step, and optionally of real data.

    Args:
        net: a :data:`~monai_danil.networks.NETWORK_NAMES` name, built by ``create_network``.
        image_size: square input size in pixels.
        batch_size: images per step.
        device: ``"cpu"`` or ``"cuda"`` (``"cuda:1"``...).
        amp: ``"none"``, ``"bf16"`` (MONAI's ``amp=True`` with ``amp_kwargs={"dtype": torch.bfloat16}``)
            or ``"fp16"`` (``amp=True``, with its GradScaler). MONAI autocasts on CUDA only, so on a CPU
            anything but ``"none"`` falls back to ``"none"`` with a warning (the JSON says which ran).
        num_classes: classifier outputs. Default 7 (with ``data_dir``: the bundle's class count).
        iterations: steps per timed run. Default 20.
        repeats: timed runs per trainer, alternating. Default 5.
        warmup: untimed steps per trainer first. Default 5.
        bank_size: DANIL memory bank slots, filled before timing. Default 4096.
        data_dir: a dataset with ``manifest.csv``: adds one epoch of its ``train`` split read from
            disk with the bundle's training transforms. Default ``None``.
        task: the bundle whose transforms and class names ``data_dir`` uses. Default ``"retina"``.
        num_workers: DataLoader workers for ``data_dir``. Default 0.
        max_images: read at most this many ``data_dir`` images (``None``: the whole split).
        progress: a tqdm bar on stderr. Default ``True``.
        reading: ``"feature"`` (the memory-bank miner), ``"response_map"`` or ``"input_gradient"`` (the
            second reading, :class:`~monai_danil.mining.ResponseMapMiner`, no bank). Default ``"feature"``.
        miner_options: keyword arguments of ``DistractorMiner`` (``reading="feature"``), e.g.
            ``{"distractor_sample": "soft", "k": 4}``. Default ``None``.

    Raises:
        ValueError: for an unknown ``amp`` mode or reading, non-positive sizes, or miner options with
            another reading.
    """

    def __init__(
        self,
        net: str,
        image_size: int,
        batch_size: int,
        device: str = "cpu",
        amp: str = "none",
        num_classes: int = 7,
        iterations: int = 20,
        repeats: int = 5,
        warmup: int = 5,
        bank_size: int = 4096,
        data_dir: str | os.PathLike | None = None,
        task: str = "retina",
        num_workers: int = 0,
        max_images: int | None = None,
        progress: bool = True,
        reading: str = "feature",
        miner_options: dict[str, Any] | None = None,
    ) -> None:
        if reading not in READINGS:
            raise ValueError(f"unknown reading {reading!r}; expected one of {', '.join(READINGS)}.")
        if miner_options and reading != "feature":
            raise ValueError(f"miner options {miner_options} are DistractorMiner's; reading {reading!r} takes none.")
        self.reading, self.miner_options = reading, dict(miner_options or {})
        if amp not in AMP_MODES:
            raise ValueError(f"unknown amp mode {amp!r}; expected one of {', '.join(AMP_MODES)}.")
        if min(image_size, batch_size, iterations, repeats) < 1 or warmup < 0 or bank_size < 0:
            raise ValueError("image_size, batch_size, iterations and repeats must be >= 1; warmup, bank_size >= 0.")
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda was asked for, but torch sees no CUDA device.")
        if amp != "none" and self.device.type != "cuda":
            logger.warning("--amp %s needs CUDA (MONAI autocasts on CUDA only); running without AMP.", amp)
            amp = "none"
        self.net, self.image_size, self.batch_size, self.amp = net, image_size, batch_size, amp
        self.iterations, self.repeats, self.warmup, self.bank_size = iterations, repeats, warmup, bank_size
        self.data_dir = Path(data_dir).resolve() if data_dir is not None else None
        self.task, self.num_workers, self.max_images = task, num_workers, max_images
        self.progress = progress
        self.transform = None
        self.datalist: list[dict] | None = None
        if self.data_dir is not None:
            self.transform, self.datalist, num_classes = self._bundle_data()
        self.num_classes = num_classes

    def _bundle_data(self) -> tuple[Any, list[dict], int]:
        from .accuracy import bundle_dir

        bundle = bundle_dir(self.task)
        parser = ConfigParser()
        parser.read_config(str(bundle / "configs" / "train.json"))
        parser.read_meta(str(bundle / "configs" / "metadata.json"))
        parser.update({"image_size": self.image_size, "dataset_dir": str(self.data_dir), "device": str(self.device)})
        class_names = parser.get_parsed_content("class_names")
        aliases = parser.get_parsed_content("label_aliases") if "label_aliases" in parser else None
        datalist = read_manifest(self.data_dir, "train", class_names, aliases or None)
        if self.max_images is not None:
            datalist = datalist[: self.max_images]
        return parser.get_parsed_content("train#preprocessing"), datalist, len(class_names)

    def _trainer(self, network: torch.nn.Module, optimizer: Any, loss: Any, data: Any, handlers: list) -> Any:
        amp_kwargs = {"dtype": torch.bfloat16} if self.amp == "bf16" else None
        return SupervisedTrainer(
            device=self.device,
            max_epochs=1,
            train_data_loader=data,
            network=network,
            optimizer=optimizer,
            loss_function=loss,
            amp=self.amp != "none",
            amp_kwargs=amp_kwargs,
            train_handlers=handlers,
        )

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _timed(self, trainer: Any) -> float:
        self._sync()
        start = time.perf_counter()
        trainer.run()
        self._sync()
        return time.perf_counter() - start

    def run(self) -> dict[str, Any]:
        """Measures and returns the JSON dict (see docs/benchmarks.md)."""
        from tqdm.auto import tqdm

        code = code_state()
        torch.manual_seed(0)
        network = create_network(self.net, self.num_classes).to(self.device)
        optimizer = torch.optim.AdamW(network.parameters(), lr=1e-3, weight_decay=1e-4)
        loss = DistractorAwareLoss()
        if self.reading == "feature":
            miner: DistractorMiner | ResponseMapMiner = DistractorMiner(bank_size=self.bank_size, **self.miner_options)
        else:
            miner = ResponseMapMiner(self.reading)
        handler = DistractorMiningHandler(network, loss, miner, lambda_max=0.5, warmup_epochs=0)
        shape = (self.batch_size, 3, self.image_size, self.image_size)
        pool = [
            {
                "image": torch.rand(shape, device=self.device),
                "label": torch.randint(0, self.num_classes, (self.batch_size,), device=self.device),
            }
            for _ in range(min(4, self.iterations))
        ]
        batches = [pool[i % len(pool)] for i in range(self.iterations)]
        warm = [pool[i % len(pool)] for i in range(max(1, self.warmup))]
        trainers = {
            "ce": self._trainer(network, optimizer, loss, batches, []),
            "danil": self._trainer(network, optimizer, loss, batches, [handler]),
        }
        warmers = {
            "ce": self._trainer(network, optimizer, loss, warm, []),
            "danil": self._trainer(network, optimizer, loss, warm, [handler]),
        }
        memory = _PeakMemory(self.device)
        seconds: dict[str, list[float]] = {"ce": [], "danil": []}
        peak = {"ce": 0.0, "danil": 0.0}
        steps = 2 + 2 * self.repeats + (2 if self.datalist is not None else 0)
        with tqdm(total=steps, desc=f"speed {self.net}", unit="run", disable=not self.progress) as bar:
            for name in ("ce", "danil"):
                _use_tap(handler, name == "danil")
                warmers[name].run()
                bar.update(1)
            self._fill_bank(handler, miner)
            for repeat in range(self.repeats):
                for name in ("ce", "danil") if repeat % 2 == 0 else ("danil", "ce"):
                    _use_tap(handler, name == "danil")
                    memory.reset()
                    seconds[name].append(self._timed(trainers[name]))
                    peak[name] = max(peak[name], memory.peak_gib())
                    bar.update(1)
            data = self._data_epoch(network, optimizer, loss, handler, bar) if self.datalist is not None else None
        images = self.iterations * self.batch_size
        rates = {name: [images / s for s in values] for name, values in seconds.items()}
        ce_rate, danil_rate = statistics.median(rates["ce"]), statistics.median(rates["danil"])
        result: dict[str, Any] = {
            "net": self.net,
            "image_size": self.image_size,
            "batch_size": self.batch_size,
            "num_classes": self.num_classes,
            "device": str(self.device),
            "amp": self.amp,
            "ce_img_per_s": ce_rate,
            "danil_img_per_s": danil_rate,
            "ratio": danil_rate / ce_rate,
            "overhead": 1.0 - danil_rate / ce_rate,
            # the two runs of a repeat are adjacent in time: their ratio cancels slow drifts of machine load
            "paired_ratio_median": statistics.median(d / c for d, c in zip(rates["danil"], rates["ce"])),
            "peak_gib": peak,
            "peak_memory_source": memory.source,
            "repeats": {"ce_img_per_s": rates["ce"], "danil_img_per_s": rates["danil"]},
            "config": {
                "iterations": self.iterations,
                "repeats": self.repeats,
                "warmup": self.warmup,
                "reading": self.reading,
                "miner_options": self.miner_options,
                "bank_size": miner.bank_size,
                "bank_filled": miner.bank.count if isinstance(miner, DistractorMiner) else 0,
                "lambda": 0.5,
                "optimizer": "AdamW(lr=1e-3, weight_decay=1e-4)",
            },
            "data": data,
            **environment(self.device, code),
        }
        if data is not None:
            # the trainer cannot go faster than its loader: whichever rate is lower sets the pace
            data["model_img_per_s"] = danil_rate
            data["limit"] = "data loading" if data["loader_img_per_s"] < danil_rate else "model"
        return result

    def _fill_bank(self, handler: DistractorMiningHandler, miner: DistractorMiner | ResponseMapMiner) -> None:
        """Fills the memory bank to capacity, so every timed step mines over all of it."""
        if not isinstance(miner, DistractorMiner) or miner.bank_size == 0 or handler.last_batch is None:
            return
        dim = handler.last_batch.features.shape[1]
        features = torch.rand(self.bank_size, dim, device=self.device)
        labels = torch.randint(0, self.num_classes, (self.bank_size,), device=self.device)
        miner.update(features, labels)

    def _data_epoch(
        self, network: torch.nn.Module, optimizer: Any, loss: Any, handler: DistractorMiningHandler, bar: Any
    ) -> dict[str, Any]:
        """One epoch of the real data from disk through the DANIL trainer, and the loader alone."""
        dataset = Dataset(self.datalist, transform=self.transform)
        loader = DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=True,
            drop_last=True,
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
        )
        images = len(loader) * self.batch_size
        if images == 0:
            raise ValueError(f"{len(self.datalist)} images make no full batch of {self.batch_size}.")  # type: ignore[arg-type]
        start = time.perf_counter()
        for _ in loader:
            pass
        loader_seconds = time.perf_counter() - start
        bar.update(1)
        _use_tap(handler, True)
        epoch_seconds = self._timed(self._trainer(network, optimizer, loss, loader, [handler]))
        bar.update(1)
        return {
            "data_dir": str(self.data_dir),
            "task": self.task,
            "images": images,
            "num_workers": self.num_workers,
            "loader_img_per_s": images / loader_seconds,
            "epoch_img_per_s": images / epoch_seconds,
        }
