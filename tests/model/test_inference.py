"""Sliding-window inference: blending against a float64 reference, padding, prompts, memory bound;
mapping predictions back onto the original PET grid."""

import ctypes
import gc
import math
import multiprocessing

import monai.inferers
import nibabel as nib
import numpy as np
import pytest
import torch

from anatoseg.data.case import Case
from anatoseg.data.nifti import file_to_zyx, zyx_to_file
from anatoseg.data.preprocess import Preprocessing, preprocess_case
from anatoseg.inference.predict import quantise, restore_mask
from anatoseg.inference.sliding_window import gaussian_1d, sliding_window_probability, window_starts

pytestmark = pytest.mark.usefixtures("one_thread")


class ConvLogits(torch.nn.Module):
    """Stand-in network (tests only): a fixed 3×3×3 conv from 2 channels (+ organ ids) to 2 logits."""

    def __init__(self, with_organs: bool = False):
        super().__init__()
        generator = torch.Generator().manual_seed(1)
        self.conv = torch.nn.Conv3d(3 if with_organs else 2, 2, 3, padding=1)
        with torch.no_grad():
            for p in self.conv.parameters():
                p.copy_(torch.randn(p.shape, generator=generator))
        self.with_organs = with_organs

    def forward(self, image, organs=None):
        if self.with_organs:
            image = torch.cat([image, organs[:, None].float() / 10], 1)
        return self.conv(image)


def reference_probability(forward, image, patch, overlap, sigma_scale, organs=None):
    """Float64 blending with full 3D Gaussian windows and an explicit weight map (MONAI-style)."""
    spatial = image.shape[1:]
    num = np.zeros(spatial)
    den = np.zeros(spatial)
    starts = [window_starts(s, p, overlap) for s, p in zip(spatial, patch)]
    for z in starts[0]:
        for y in starts[1]:
            for x in starts[2]:
                region = tuple(slice(a, a + p) for a, p in zip((z, y, x), patch))
                sizes = [min(p, s - a) for a, p, s in zip((z, y, x), patch, spatial)]
                window = torch.nn.functional.pad(
                    image[(slice(None), *region)][None].float(),
                    [v for n, p in zip(reversed(sizes), reversed(patch)) for v in (0, p - n)], mode="replicate")
                org = None
                if organs is not None:
                    org = torch.nn.functional.pad(
                        organs[region][None], [v for n, p in zip(reversed(sizes), reversed(patch)) for v in (0, p - n)])
                with torch.no_grad():
                    logits = forward(window, org).double()
                p = torch.softmax(logits, 1)[0, 1, :sizes[0], :sizes[1], :sizes[2]].numpy()
                g = np.einsum("i,j,k->ijk", *(gaussian_1d(pp, sigma_scale)[:n] for pp, n in zip(patch, sizes)))
                num[region] += g * p
                den[region] += g
    return num / den


@pytest.mark.parametrize("shape,patch,overlap", [
    ((40, 37, 29), (16, 16, 16), 0.5),
    ((23, 41, 17), (16, 16, 16), 0.25),
    ((12, 33, 9), (16, 16, 16), 0.5),  # smaller than the window along two axes: padded windows
    ((63, 20, 20), (32, 16, 16), 0.0),
], ids=["Z40Y37X29-p16-o.5", "Z23Y41X17-p16-o.25", "Z12Y33X9-p16-pad", "Z63Y20X20-p32x16-o0"])
def test_blending_matches_float64_reference(shape, patch, overlap):
    image = torch.randn(2, *shape)
    net = ConvLogits()
    ours = sliding_window_probability(net, image, patch, overlap=overlap, batch_size=3)
    assert ours.dtype == torch.float16 and tuple(ours.shape) == shape
    ref = reference_probability(net, image, patch, overlap, 0.125)
    assert np.abs(ours.float().numpy() - ref).max() < 4e-3


def test_organ_windows_follow_the_image_windows():
    shape, patch = (30, 26, 21), (16, 16, 16)
    image = torch.randn(2, *shape)
    organs = torch.randint(0, 15, shape, dtype=torch.uint8)
    net = ConvLogits(with_organs=True)
    ours = sliding_window_probability(net, image.numpy(), patch, organs=organs.numpy(), overlap=0.5)
    ref = reference_probability(net, image, patch, 0.5, 0.125, organs=organs.long())
    assert np.abs(ours.float().numpy() - ref).max() < 4e-3
    without = sliding_window_probability(ConvLogits(with_organs=True), image, patch,
                                         organs=torch.zeros(shape, dtype=torch.uint8), overlap=0.5)
    assert np.abs(without.float().numpy() - ref).max() > 0.05  # the prompts reach the network


def test_window_starts_cover_and_respect_overlap():
    for size, window, overlap in [(100, 32, 0.5), (33, 32, 0.5), (32, 32, 0.9), (7, 32, 0.5), (1000, 96, 0.25)]:
        starts = window_starts(size, window, overlap)
        assert starts[0] == 0 and starts[-1] == max(0, size - window)
        assert all(b - a <= int(window * (1 - overlap)) for a, b in zip(starts, starts[1:]))
        assert len(set(starts)) == len(starts)
    assert [len(window_starts(s, 32, 0.5)) for s in (100, 33, 7)] == [6, 2, 1]


def _rss_mb(key):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(key)


def _extra_peak_mb(fn):
    """Peak resident memory above the starting level during ``fn()`` (VmHWM after a clear_refs reset)."""
    gc.collect()
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")
    base = _rss_mb("VmRSS")
    fn()
    return _rss_mb("VmHWM") - base


def _measure_peaks() -> tuple[float, float, float]:
    """(ours, bound, MONAI default) extra peak RSS in MiB, measured in a fresh process."""
    ctypes.CDLL("libc.so.6").mallopt(-3, 1 << 16)  # M_MMAP_THRESHOLD: freed large buffers go back to the OS
    shape, patch = (96, 192, 192), (32, 32, 32)
    image = torch.randn(2, *shape)
    input_mb = image.numel() * 4 / 2**20
    net = ConvLogits()
    window_mb = _extra_peak_mb(lambda: sliding_window_probability(net, image[:, :32, :32, :32], patch, batch_size=2))
    ours_mb = _extra_peak_mb(lambda: sliding_window_probability(net, image, patch, batch_size=2) >= 0.5)
    # float16 blended probability (1/4 of the float32 two-channel input) + the boolean mask (1/8), plus O(window).
    bound_mb = (0.25 + 0.125 + 0.05) * input_mb + window_mb + 4

    def monai_default():
        logits = monai.inferers.sliding_window_inference(image[None], patch, 2, net)
        return logits.argmax(1)

    return ours_mb, bound_mb, _extra_peak_mb(monai_default)


def test_memory_stays_under_a_bound_from_the_input_size():
    try:
        ctypes.CDLL("libc.so.6")
    except OSError:
        pytest.skip("needs glibc")
    # A fresh process: allocator state left by earlier tests in this one would blur the peak.
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        ours_mb, bound_mb, monai_mb = pool.apply(_measure_peaks)
    assert ours_mb < bound_mb, f"{ours_mb:.1f} MiB > bound {bound_mb:.1f} MiB"
    assert monai_mb > bound_mb  # the bound separates the two approaches
    assert math.isfinite(ours_mb)


def _oblique_case(shape=(30, 26, 22)):
    """A case whose PET file is stored LPS-flipped and axis-swapped, with a sphere of 'lesion'."""
    affine = np.array([[0.0, -3.0, 0.0, 40.0], [-4.0, 0.0, 0.0, 60.0], [0.0, 0.0, 5.0, -70.0], [0, 0, 0, 1]])
    idx = np.indices(shape).astype(float)
    centre = np.array(shape)[:, None, None, None] / 2
    sphere = (((idx - centre) ** 2).sum(0) < 36).astype(np.uint8)
    ct = np.full(shape, -1000.0, np.float32)
    ct[3:-3, 3:-3, 2:-2] = 40.0
    return affine, sphere, ct


def test_restore_maps_back_onto_the_original_grid():
    affine, sphere, ct = _oblique_case()
    pet_zyx, zyx_affine = file_to_zyx(sphere.astype(np.float32), affine)
    case = Case("c", pet=pet_zyx, ct=file_to_zyx(ct, affine)[0], affine=zyx_affine)
    params = Preprocessing(target_spacing=(3.5, 2.5, 2.0), ct_clip=(-1000, 1000), ct_mean=0.0, ct_std=100.0,
                           suv_mean=0.0, suv_std=1.0, crop_margin_mm=4.0)
    pre = preprocess_case(case, params)
    assert pre.image.shape[1:] != case.shape  # cropped and resampled
    # The target spacing (Z, Y, X) lands on the right world axes: z (S) 3.5 mm, y (A) 2.5 mm, x (R) 2.0 mm.
    np.testing.assert_allclose(np.abs(pre.affine[:3, :3]).sum(axis=0), [3.5, 2.5, 2.0], rtol=0.1)
    assert [int(np.argmax(np.abs(pre.affine[:3, axis]))) for axis in range(3)] == [2, 1, 0]
    prob = torch.from_numpy(np.ascontiguousarray(pre.image[1])).clamp(0, 1).half()
    mask_zyx = restore_mask(quantise(prob), pre)
    assert mask_zyx.shape == case.shape and mask_zyx.dtype == np.uint8
    mask = zyx_to_file(mask_zyx, affine)
    assert mask.shape == sphere.shape
    dice = 2 * (mask & sphere).sum() / (mask.sum() + sphere.sum())
    assert dice > 0.85
    back, back_affine = file_to_zyx(mask, affine)
    np.testing.assert_array_equal(back, mask_zyx)
    np.testing.assert_allclose(back_affine, zyx_affine)
    assert nib.orientations.aff2axcodes(affine) != ("R", "A", "S")
