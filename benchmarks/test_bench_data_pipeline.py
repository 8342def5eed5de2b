"""Training-patch throughput of one DataLoader worker, and the workers a ``base`` step needs.

A phantom case at a realistic size (generated at 2.5 × 2.5 × 3 mm, X Y Z, then body-cropped
and kept at (Z, Y, X) = (3, 2.5, 2.5) mm: about 330 × 150 × 250 voxels) is cut into
``base`` patches 112×160×128 (Z, Y, X) with organ maps, exactly as
:class:`~anatoseg.training.sampling.PatchBatches` does in a worker: crop, the MONAI
augmentation (flips, affine, intensity), stacking into a batch of 2. One torch thread,
as in a DataLoader worker. Two augmentation settings: ``default`` (the training
config: affine with probability 0.2, intensity 0.15) and ``full`` (every transform on
every patch, the worst case).

``extra_info``: ``patches_per_s_per_worker`` (2 / mean time of a batch: with the default
config the affine, ~0.6 s a patch, hits one patch in five, so the median understates the cost) and
``workers_for_base_step``: the workers :func:`~anatoseg.training.sampling.auto_num_workers`
would ask for to feed a ``base`` step on an H100 (0.46 s per batch of 2).

    make bench PYTEST_ARGS="-k data_pipeline"
"""

import dataclasses
import math

import pytest
import torch

from anatoseg.config import AugmentConfig
from anatoseg.data.phantom import generate_case
from anatoseg.data.preprocess import preprocess_case
from anatoseg.stage1.data import make_preprocessing
from anatoseg.training.sampling import BASE_STEP_S, PatchBatches, TrainVolume

from bench_utils import bench, record

BASE_PATCH = (112, 160, 128)
BATCH = 2
FULL = AugmentConfig(**{name: 1.0 for name in ("flip_prob", "affine_prob", "intensity_prob", "gamma_prob",
                                               "contrast_prob", "noise_prob", "blur_prob", "lowres_prob",
                                               "misalign_prob")})


@pytest.fixture(scope="module")
def volume():
    case = generate_case([7, 0], spacing=(2.5, 2.5, 3.0)).to_case()
    pre = preprocess_case(case, make_preprocessing((3.0, 2.5, 2.5)))
    return TrainVolume(case.case_id, pre.image, pre.lesions, pre.organs)


@pytest.mark.parametrize("augment", ["default", "full"])
def test_patch_throughput_per_worker(benchmark, volume, augment):
    config = FULL if augment == "full" else AugmentConfig()
    batches = PatchBatches([volume], BASE_PATCH, batch_size=BATCH, lesion_fraction=1 / 3,
                           augment=dataclasses.replace(config), seed=0, use_organs=True, steps=10**6)
    steps = iter(range(10**6))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a DataLoader worker runs with one torch thread
    try:
        bench(benchmark, lambda: batches[next(steps)], "cpu", rounds=12, warmup=1)
    finally:
        torch.set_num_threads(threads)
    rate = BATCH / float(benchmark.stats.stats.mean)  # throughput follows the mean: the affine hits some batches
    record(benchmark, patches_per_s_per_worker=round(rate, 3), volume_shape=list(volume.label.shape),
           workers_for_base_step=math.ceil(BATCH / (rate * BASE_STEP_S)))
