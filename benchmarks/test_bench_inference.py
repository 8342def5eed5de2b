"""Whole-volume inference: anatoseg's bounded-memory sliding window against MONAI's defaults.

Input: a two-channel (PET, CT) float32 volume already in memory; output: a uint8
lesion mask of the same size. Both providers run the same network on the same
windows' device; only the stitching differs.

- Volume: the default run uses 112×160×160 (Z, Y, X), about 1/9 of the autoPET
  median, so it finishes in a few minutes on 2 CPU cores. ``ANATO_BENCH_FULL=1``
  uses the autoPET median 326×400×400 (the issue's size; about 10 minutes of
  network time per provider on 2 CPU cores).
- Model: ``tiny`` ``anatoseg_noprompt`` (the anatoseg network without its prompt
  branch, so that MONAI can call it with the image alone), eval mode, window 64³
  (the tiny preset's patch budget).
- Providers:
  - ``anatoseg``: :func:`~anatoseg.inference.sliding_window.sliding_window_probability`
    (Gaussian blending, overlap 0.5, float16 accumulation, separable normaliser)
    thresholded at 0.5;
  - ``monai-default``: ``sliding_window_inference(x, roi, 1, net)`` with its default
    settings (overlap 0.25, constant blending, float32 logits and count map), argmax;
  - ``monai-gaussian``: the same with overlap 0.5 and Gaussian blending, i.e. our
    windows and weights: the like-for-like time comparison.
- ``peak_mem_mb``: the process's peak RSS growth during one call
  (:func:`bench_utils.peak_memory_mb`), after one warm-up window. ``mem_ratio_vs_monai_default`` (issue target
  ≤ 0.5) is recorded on the anatoseg row when ``monai-default`` ran first in the
  same session. ``windows``: windows the network saw.

    make bench PYTEST_ARGS="-k inference"
    ANATO_BENCH_FULL=1 make bench PYTEST_ARGS="-k inference"
"""

import os

import pytest
import torch
from monai.inferers import sliding_window_inference

from anatoseg.inference.sliding_window import sliding_window_probability
from anatoseg.nets import NetConfig, build_network

from bench_utils import bench, peak_memory_mb, record

FULL = os.environ.get("ANATO_BENCH_FULL") == "1"
SHAPE = (326, 400, 400) if FULL else (112, 160, 160)
WINDOW = (64, 64, 64)
PROVIDERS = ["monai-default", "monai-gaussian", "anatoseg"]
_PEAKS: dict[str, float] = {}


def _predictor(provider, net, image, device):
    if provider == "anatoseg":
        def run():
            return (sliding_window_probability(net, image, WINDOW, overlap=0.5, device=device) >= 0.5).to(torch.uint8)
        return run
    overlap, mode = (0.25, "constant") if provider == "monai-default" else (0.5, "gaussian")

    def run():
        logits = sliding_window_inference(image[None], WINDOW, 1, net, overlap=overlap, mode=mode,
                                          sw_device=device, device="cpu")
        return logits.argmax(1).to(torch.uint8)

    return run


@pytest.mark.parametrize("provider", PROVIDERS)
def test_inference_cpu(benchmark, provider):
    net = build_network("anatoseg_noprompt", NetConfig.preset("tiny"), WINDOW).eval()
    calls = []
    net.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[0]))
    image = torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(0))
    run = _predictor(provider, net, image, "cpu")
    peaks = []
    with torch.no_grad():
        net(image[None, :, :WINDOW[0], :WINDOW[1], :WINDOW[2]])  # first-call allocations outside the measurement
        calls.clear()
        bench(benchmark, lambda: peaks.append(peak_memory_mb(run, "cpu")), "cpu", rounds=1, warmup=0)
    _PEAKS[provider] = peaks[0]
    extra = {}
    if provider == "anatoseg" and "monai-default" in _PEAKS:
        extra["mem_ratio_vs_monai_default"] = round(peaks[0] / _PEAKS["monai-default"], 3)
    record(benchmark, peak_mb=peaks[0], kernel="sliding_window_inference", mode="fwd", provider=provider,
           size=f"tiny-C2-{'x'.join(map(str, SHAPE))}-w{WINDOW[0]}", input_mb=round(image.numel() * 4 / 2**20, 1),
           windows=sum(calls), threads=torch.get_num_threads(), **extra)
