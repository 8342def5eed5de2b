"""HD95 equals MONAI's ``compute_hausdorff_distance(percentile=95, spacing=...)`` (in mm) on random blob masks."""

import numpy as np
import pytest

monai_metrics = pytest.importorskip("monai.metrics")
torch = pytest.importorskip("torch")

from anatoseg.metrics import hd95  # noqa: E402


def monai_hd95(pred, gt, spacing):
    tensors = [torch.from_numpy(np.asarray(m, bool))[None, None] for m in (pred, gt)]
    return float(monai_metrics.compute_hausdorff_distance(*tensors, include_background=True, percentile=95,
                                                         spacing=list(spacing))[0, 0])


def blobs(shape, count, rng):
    z, y, x = np.ogrid[tuple(slice(0, s) for s in shape)]
    mask = np.zeros(shape, bool)
    for _ in range(count):
        centre, radius = rng.uniform(8, np.array(shape) - 8), rng.uniform(2, 7)
        mask |= (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + ((x - centre[2]) * 0.8) ** 2 < radius ** 2
    return mask


@pytest.mark.parametrize("seed", range(4), ids=lambda s: f"seed{s}")
def test_hd95_equals_monai(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(int(n) for n in rng.integers(23, 41, 3))
    gt = blobs(shape, 3, rng)
    pred = np.roll(gt, int(rng.integers(1, 4)), axis=int(rng.integers(3))) | blobs(shape, 1, rng)
    spacing = tuple(float(s) for s in rng.uniform(0.7, 4.0, 3))
    assert hd95(pred, gt, spacing) == pytest.approx(monai_hd95(pred, gt, spacing), rel=1e-5)
    assert hd95(gt, pred, spacing) == pytest.approx(monai_hd95(gt, pred, spacing), rel=1e-5)
