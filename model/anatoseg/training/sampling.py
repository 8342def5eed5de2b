"""Training patches: lesion-centred, hard-negative and random crops plus augmentation, as a pure function of
the step.

Each patch is centred on a lesion voxel (share ``lesion_fraction``) or, among the others, on a voxel of a
high-uptake organ (share ``organ_fraction`` of them), on a hot voxel outside the lesions (``hot_fraction``,
:mod:`anatoseg.training.hard_negatives`), or placed at random (the rest); augmentation is
:mod:`anatoseg.training.augment`.

Sample ``i`` of the global batch at step ``s`` is drawn with
``numpy.random.default_rng([seed, s, i])`` — case, crop position and every
augmentation parameter. Batches therefore do not depend on how many DDP
processes share them, on DataLoader workers, or on whether the run was resumed:
restoring ``step`` restores the data stream exactly. Where the organ maps are the
network's prompts (``organ_prompts``) and ``augment.organ_corruption`` is on, each
crop's map is corrupted (:mod:`anatoseg.training.organ_corruption`) before the
augmentation, drawn from its own ``default_rng([seed, s, i, 1])`` so that every
other draw is the same with corruption on or off.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from anatoseg.config import AugmentConfig
from anatoseg.training.augment import Augmentation
from anatoseg.training.hard_negatives import HardNegatives
from anatoseg.training.organ_corruption import corrupt_organs

#: Seconds of a ``base`` training step (batch 2, 112×160×128, bf16) on an H100: the rate the loader must keep.
BASE_STEP_S = 0.46
#: Patches per second one DataLoader worker builds at the ``base`` patch with the default augmentation
#: with every augmentation on every patch, the worst case (``benchmarks/test_bench_data_pipeline.py``,
#: 2-core AMD EPYC, one torch thread: 1.36 patches/s; 6.3 with the default probabilities, where the
#: affine, ~0.6 s a patch, hits one patch in five). Sized on the worst case so that batches the affine
#: hits twice do not stall the step: ``ceil(2 / (1.36 · 0.46))`` = 4 workers for a batch of 2.
PATCHES_PER_S_PER_WORKER = 1.36


def auto_num_workers(per_rank_batch: int, cuda: bool, *, cpu_count: int | None = None,
                     local_ranks: int | None = None) -> int:
    """DataLoader workers when ``data.num_workers`` is None (auto): enough to build ``per_rank_batch``
    patches every :data:`BASE_STEP_S` s at :data:`PATCHES_PER_S_PER_WORKER`,
    ``ceil(batch / (rate · step))``, capped at ``cpu_count − 1`` shared by the processes of this machine.
    0 without CUDA: there is no accelerator to keep fed, and the step itself needs the cores."""
    if not cuda:
        return 0
    cpus = cpu_count if cpu_count is not None else len(os.sched_getaffinity(0))
    ranks = local_ranks if local_ranks is not None else int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    wanted = math.ceil(per_rank_batch / (PATCHES_PER_S_PER_WORKER * BASE_STEP_S))
    return max(0, min(wanted, (cpus - 1) // max(ranks, 1)))


@dataclass
class TrainVolume:
    """One preprocessed case held in memory.

    ``image``: ``(2, Z, Y, X)`` float32, channels [PET, CT], normalised.
    ``label``: ``(Z, Y, X)`` uint8 lesion mask (0/1).
    ``organs``: ``(Z, Y, X)`` uint8 organ ids, or ``None``.
    """

    name: str
    image: np.ndarray
    label: np.ndarray
    organs: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.image.ndim != 4 or self.image.shape[0] != 2:
            raise ValueError(f"{self.name}: image must be (2, Z, Y, X), got {self.image.shape}")
        if self.label.shape != self.image.shape[1:]:
            raise ValueError(f"{self.name}: label shape {self.label.shape} != image {self.image.shape[1:]}")
        if self.organs is not None and self.organs.shape != self.label.shape:
            raise ValueError(f"{self.name}: organs shape {self.organs.shape} != image {self.image.shape[1:]}")
        components, count = ndimage.label(self.label > 0)
        flat = np.flatnonzero(components)
        ids = components.ravel()[flat]
        order = np.argsort(ids, kind="stable")
        #: ``(N, 3)`` int32 lesion voxel coordinates, grouped by connected component.
        self.lesion_voxels = np.stack(np.unravel_index(flat[order], self.label.shape), axis=1).astype(np.int32)
        sizes = np.bincount(ids, minlength=count + 1)[1:]
        #: offsets into ``lesion_voxels``: component k is rows ``[starts[k], starts[k + 1])``.
        self.component_starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)

    @property
    def num_lesions(self) -> int:
        return len(self.component_starts) - 1


def crop_start(centre: int, size: int, patch: int) -> int:
    """Start of a ``patch``-long crop centred at ``centre`` and kept inside ``[0, size)`` where it fits."""
    return int(min(max(centre - patch // 2, 0), max(size - patch, 0)))


def crop(volume: TrainVolume, start: Sequence[int], patch: Sequence[int]):
    """``(image (2, *patch), label (1, *patch), organs (1, *patch) | None)`` copies from ``start``;
    the image is edge-padded, the labels zero-padded where the volume is smaller than the patch."""
    region = tuple(slice(s, s + p) for s, p in zip(start, patch, strict=True))
    image = np.array(volume.image[(slice(None), *region)])  # writable copies, also of read-only memory maps
    label = np.array(volume.label[region][None])
    organs = None if volume.organs is None else np.array(volume.organs[region][None])
    pad = [(0, p - n) for p, n in zip(patch, label.shape[1:], strict=True)]
    if any(after for _, after in pad):
        image = np.pad(image, [(0, 0), *pad], mode="edge")
        label = np.pad(label, [(0, 0), *pad])
        organs = None if organs is None else np.pad(organs, [(0, 0), *pad])
    return image, label, organs


@dataclass(frozen=True)
class HardNegativeShares:
    """Shares of the patches not centred on a lesion that are centred on a voxel of one of ``organ_ids``
    (organ label ids) and on a hot non-lesion voxel (PET at or above the case's ``hot_quantile``). A case
    without the listed organs (or without organ labels) gives a hot patch instead of an organ patch; one
    without hot voxels a random one."""

    organ: float = 0.0
    hot: float = 0.0
    organ_ids: tuple[int, ...] = ()
    hot_quantile: float = 0.99

    def __post_init__(self) -> None:
        if min(self.organ, self.hot) < 0 or self.organ + self.hot > 1:
            raise ValueError(f"hard-negative shares must be >= 0 and sum to <= 1, got organ {self.organ}, "
                             f"hot {self.hot}")
        if not 0 < self.hot_quantile < 1:
            raise ValueError(f"hot_quantile must lie in (0, 1), got {self.hot_quantile}")


class PatchBatches(torch.utils.data.Dataset):
    """``dataset[step]`` is this process's share of the global batch of that step.

    Returns ``{"image": (b, 2, *P) float32, "label": (b, 1, *P) float32,
    "organs": (b, *P) int64}`` (``organs`` only when ``use_organs``), where
    ``b = batch_size // world_size`` and this rank holds samples
    ``[rank * b, (rank + 1) * b)`` of the global batch. Patches are centred on a lesion voxel (share
    ``lesion_fraction``; a random patch in a case without lesions), on hard negatives (``hard_negatives``,
    :class:`HardNegativeShares`) or placed at random (the rest); during the first ``lesion_warmup`` steps every
    patch is centred on a lesion. ``organ_prompts``: the organ maps are
    the network's prompts (not an auxiliary head's target), corrupted as ``augment.organ_corruption`` says.
    """

    def __init__(self, volumes: Sequence[TrainVolume], patch_size: Sequence[int], *, batch_size: int,
                 lesion_fraction: float, augment: AugmentConfig, seed: int, use_organs: bool,
                 rank: int = 0, world_size: int = 1, steps: int,
                 hard_negatives: HardNegativeShares = HardNegativeShares(), organ_prompts: bool = False,
                 lesion_warmup: int = 0):
        if not volumes:
            raise ValueError("no training volumes")
        if not 0 <= lesion_fraction <= 1:
            raise ValueError(f"lesion_fraction must lie in [0, 1], got {lesion_fraction}")
        if lesion_warmup < 0:
            raise ValueError(f"lesion_warmup must be >= 0 steps, got {lesion_warmup}")
        if organ_prompts and not use_organs:
            raise ValueError("organ_prompts needs use_organs: the batches carry no organ maps to corrupt")
        if use_organs and any(v.organs is None for v in volumes):
            missing = next(v.name for v in volumes if v.organs is None)
            raise ValueError(f"{missing}: the network uses organ prompts but this case has no organ labels")
        self.volumes = list(volumes)
        self.patch = tuple(int(p) for p in patch_size)
        self.batch_size = batch_size
        self.per_rank = batch_size // world_size
        self.rank = rank
        self.lesion_fraction = lesion_fraction
        self.lesion_warmup = lesion_warmup
        self.hard = hard_negatives
        self.seed = seed
        self.use_organs = use_organs
        self.steps = steps
        self.augment = Augmentation(augment, use_organs)
        self.corruption = augment.organ_corruption if organ_prompts and augment.organ_corruption.enabled else None
        self._negatives: dict[int, HardNegatives] = {}  # by volume index, built on first use

    def __len__(self) -> int:
        return self.steps

    def lesion_centred(self, index: int, rng: np.random.Generator) -> bool:
        """Whether sample ``index`` of a global batch is centred on a lesion.

        As nnU-Net: the last ``batch - round(batch · (1 - lesion_fraction))`` samples of every
        batch are, so each batch of 2 at the default 1/3 holds one lesion patch. Without that
        guarantee, batches without lesions pull the tiny foreground class towards zero and
        training can sit at the all-background solution for hundreds of steps. A batch of one
        draws with probability ``lesion_fraction`` instead.
        """
        if self.batch_size == 1:
            return bool(rng.random() < self.lesion_fraction)
        return index >= round(self.batch_size * (1 - self.lesion_fraction))

    def kind(self, step: int, index: int, rng: np.random.Generator) -> str:
        """``"lesion"``, ``"organ"``, ``"hot"`` or ``"random"``: where sample ``index`` of ``step`` is centred.

        Every sample before step ``lesion_warmup``, later the slots of :meth:`lesion_centred`, are lesions;
        each of the others is an organ patch with probability ``hard_negatives.organ``, a hot one with
        probability ``hard_negatives.hot``, else random."""
        if self.lesion_centred(index, rng) or step < self.lesion_warmup:
            return "lesion"
        draw = rng.random()
        if draw < self.hard.organ:
            return "organ"
        return "hot" if draw < self.hard.organ + self.hard.hot else "random"

    def negatives(self, which: int) -> HardNegatives:
        """The hard-negative candidates of volume ``which``."""
        if which not in self._negatives:
            volume = self.volumes[which]
            self._negatives[which] = HardNegatives(volume.image[0], volume.label, volume.organs,
                                                   self.hard.organ_ids, self.hard.hot_quantile)
        return self._negatives[which]

    def centre(self, which: int, kind: str, rng: np.random.Generator) -> np.ndarray | None:
        """``(3,)`` the centre voxel of a ``kind`` patch in volume ``which``, falling back as the class and
        :class:`HardNegativeShares` say; None for a random patch."""
        volume = self.volumes[which]
        if kind == "lesion" and volume.num_lesions:
            k = int(rng.integers(volume.num_lesions))
            return volume.lesion_voxels[int(rng.integers(volume.component_starts[k], volume.component_starts[k + 1]))]
        centre = None
        if kind == "organ":
            centre = self.negatives(which).organ_centre(rng)
        if centre is None and kind in ("organ", "hot"):
            centre = self.negatives(which).hot_centre(rng)
        return centre

    def sample(self, step: int, index: int) -> dict[str, np.ndarray]:
        """Sample ``index`` of the global batch at ``step``: a crop and its augmentation."""
        rng = np.random.default_rng([self.seed, step, index])
        which = int(rng.integers(len(self.volumes)))
        volume = self.volumes[which]
        shape = volume.label.shape
        centre = self.centre(which, self.kind(step, index, rng), rng)
        if centre is not None:
            start = [crop_start(int(c), s, p) for c, s, p in zip(centre, shape, self.patch, strict=True)]
        else:
            start = [int(rng.integers(max(s - p, 0) + 1)) for s, p in zip(shape, self.patch, strict=True)]
        image, label, organs = crop(volume, start, self.patch)
        if self.corruption is not None:
            own = np.random.default_rng([self.seed, step, index, 1])  # leaves rng's draws as they are
            organs = corrupt_organs(organs[0], self.corruption, own)[None]
        item = {"image": image, "label": label.astype(np.float32)}
        if self.use_organs:
            item["organs"] = organs.astype(np.float32)
        return self.augment(item, rng)

    def __getitem__(self, step: int) -> dict[str, torch.Tensor]:
        samples = [self.sample(step, self.rank * self.per_rank + i) for i in range(self.per_rank)]
        batch = {"image": torch.from_numpy(np.stack([s["image"] for s in samples]).astype(np.float32)),
                 "label": torch.from_numpy(np.stack([s["label"] for s in samples]).astype(np.float32))}
        if self.use_organs:
            batch["organs"] = torch.from_numpy(np.stack([s["organs"][0] for s in samples])).round().long()
        return batch
