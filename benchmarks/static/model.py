"""A throughput model of time at the benchmark shapes from the static figures -- a model, not a measurement.

For one kernel over its whole problem (``Kernel.total`` elements), on an H100 SXM:

    issue  = instr/elem × elements / (SMs × schedulers × clock)         every warp-instruction issues once
    mufu   = ex2/elem × 32 × elements / (SMs × MUFU lanes per clock × clock)
    memory = compulsory bytes / HBM bandwidth                           (FACTS.md's traffic, fp32)
    model  = max(issue, mufu, memory)

It assumes full occupancy, no stalls (latency, barriers, atomics contention, 64-bit division slow paths
never taken beyond what is in the static count) and counts each static instruction of the measured region
once per pass. Real kernels are slower; the model says which bound a kernel's code is nearest to, and how
far that code alone is from the floors.
"""

from __future__ import annotations

from benchmarks.static import contracts

H100 = dict(name="H100 SXM (model)", sms=132, schedulers=4, clock_hz=1.75e9, mufu_lanes=16, hbm_bytes_s=3.35e12)

_SCAN_FWD, _SCAN_BWD = 1.81e9, 3.42e9  # FACTS.md: compulsory fwd and added bwd traffic of the 3D scan
_CONV_X = contracts.CONV_OUTPUTS * 4
_PATCH = contracts.PATCH_ELEMENTS * 4
_VOLUME = contracts.PATCH["batch"] * contracts.PATCH["channels"] * 112 * 160 * 128 * 4
_ATTN = contracts.ATTN_OUTPUTS * 4
BYTES = {  # compulsory traffic of each kernel at the benchmark shape (fp32)
    "selective_scan.triton.forward": _SCAN_FWD, "selective_scan.cuda.forward": _SCAN_FWD,
    "selective_scan.triton.backward": _SCAN_BWD, "selective_scan.cuda.backward": _SCAN_BWD,
    "order_conv.triton.forward": 2 * _CONV_X, "order_conv.cuda.forward": 2 * _CONV_X,  # x in, out
    "order_conv.triton.backward": 3 * _CONV_X, "order_conv.cuda.backward": 3 * _CONV_X,  # grad, x in, dx
    "masked_patch.triton.gather": 2 * _PATCH, "masked_patch.cuda.gather": 2 * _PATCH,
    "masked_patch.triton.scatter": 2 * _PATCH, "masked_patch.cuda.scatter": 2 * _PATCH,
    "masked_patch.triton.scatter_add": _PATCH + _VOLUME,  # the gather's backward writes the whole dx
    "hyper_attention.triton.forward": 2 * _ATTN, "hyper_attention.triton.backward": 3 * _ATTN,
}
# the segment scan (SEG = 8 steps): u or δ 604 MB, B or C 101 MB, z/out/dout 201 MB, the K per-order outputs y_k
# 604 MB, segment states (forward and backward buffers each) SCAN_UPDATES / 8 fp32 = 1.21 GB
_UD, _BC, _ZL, _YK, _SEGS = 604e6, 101e6, 201e6, 604e6, contracts.SCAN_UPDATES / 8 * 4
BYTES.update({
    "selective_scan.triton_segment.forward_summary": 2 * _UD + _BC + _SEGS,
    "selective_scan.triton_segment.carry": 2 * _SEGS,
    "selective_scan.triton_segment.forward_output": 2 * _UD + 2 * _BC + _SEGS + _YK,
    "selective_scan.triton_segment.merge": _YK + 2 * _ZL,
    "selective_scan.triton_segment.backward_summary": _UD + _BC + 2 * _ZL + _SEGS,
    "selective_scan.triton_segment.backward": 4 * _UD + 4 * _BC + 2 * _ZL + 2 * _SEGS + _YK,
})
# the CUDA segment scan: segments of 64 steps, so 8x fewer segment states than the Triton one
_SEGS64 = contracts.SCAN_UPDATES / 64 * 4
BYTES.update({
    "selective_scan.cuda_segment.forward_summary": 2 * _UD + _BC + _SEGS64,
    "selective_scan.cuda_segment.carry": 2 * _SEGS64,
    "selective_scan.cuda_segment.forward_output": 2 * _UD + 2 * _BC + _SEGS64 + _YK,
    "selective_scan.cuda_segment.merge": _YK + 2 * _ZL,
    # its backward: the reverse summaries read δ, C, dout and z; the walk reads u, δ, B, C, dout, z and both state
    # buffers and writes du, dδ, dB, dC and the y_k; the merge reads the y_k, dout and z and writes dz
    "selective_scan.cuda_segment.backward_summary": _UD + _BC + 2 * _ZL + _SEGS64,
    "selective_scan.cuda_segment.backward_carry": 2 * _SEGS64,
    "selective_scan.cuda_segment.backward": 4 * _UD + 4 * _BC + 2 * _ZL + 2 * _SEGS64 + _YK,
    "selective_scan.cuda_segment.backward_merge": _YK + 3 * _ZL,
})

# FACTS.md "Hardware floors of the 3D scan" (H100) and the turn-1 measurement, per op and mode, in ms
FLOORS = {
    ("selective_scan", "forward"): dict(floor_ms=0.7, floor="compute (exp + FMA) floor",
                                        measured_ms={"cuda": 14.9, "triton": 29.0}),
    ("selective_scan", "forward+backward"): dict(floor_ms=2.2, floor="compute floor (HBM 1.56)",
                                                 measured_ms={"cuda": 64.0, "triton": 252.0}),
    ("order_conv", "forward+backward"): dict(floor_ms=0.9, floor="HBM floor (3.0 GB)"),
    ("masked_patch", "gather+scatter_add"): dict(floor_ms=0.036, floor="HBM floor (119 MB)"),
}


def estimate(record: dict, gpu: dict = H100) -> dict:
    kernel = contracts.BY_NAME[record["kernel"]]
    n = kernel.total
    issue = record["instr_per_elem"] * n / (gpu["sms"] * gpu["schedulers"] * gpu["clock_hz"])
    mufu = record["ex2_per_elem"] * 32 * n / (gpu["sms"] * gpu["mufu_lanes"] * gpu["clock_hz"])
    memory = BYTES[kernel.name] / gpu["hbm_bytes_s"]
    bound = max((issue, "issue"), (mufu, "mufu"), (memory, "memory"))
    return dict(kernel=kernel.name, elements=n, issue_ms=issue * 1e3, mufu_ms=mufu * 1e3, memory_ms=memory * 1e3,
                model_ms=bound[0] * 1e3, bound=bound[1])


# the segment scan's phases (the carry and merge kernels run in both directions)
_SEGMENT_STEPS = {("triton_segment", "forward"): ("forward_summary", "carry", "forward_output", "merge"),
                  ("cuda_segment", "forward"): ("forward_summary", "carry", "forward_output", "merge"),
                  ("triton_segment", "backward"): ("backward_summary", "carry", "backward", "merge"),
                  ("cuda_segment", "backward"): ("backward_summary", "backward_carry", "backward", "backward_merge")}


def op_rows(estimates: dict[str, dict]) -> list[dict]:
    """Per op, backend and mode: the modelled time beside the floor (and the measurement, where one exists)."""
    rows = []
    combos = [("selective_scan", "forward", ("forward",)),
              ("selective_scan", "forward+backward", ("forward", "backward")),
              ("order_conv", "forward+backward", ("forward", "backward")),
              ("masked_patch", "gather+scatter_add", ("gather", "scatter_add")),
              ("hyper_attention", "forward+backward", ("forward", "backward"))]
    for op, mode, steps in combos:
        for backend in ("triton", "cuda", "triton_segment", "cuda_segment"):
            names = [f"{op}.{backend}.{p}" for s in steps for p in _SEGMENT_STEPS.get((backend, s), (s,))]
            if not all(n in estimates for n in names):
                continue
            floor = FLOORS.get((op, mode), {})
            rows.append(dict(op=op, backend=backend, mode=mode,
                             model_ms=round(sum(estimates[n]["model_ms"] for n in names), 4),
                             bounds="+".join(estimates[n]["bound"] for n in names),
                             floor_ms=floor.get("floor_ms"), floor=floor.get("floor"),
                             measured_ms=floor.get("measured_ms", {}).get(backend)))
    return rows
