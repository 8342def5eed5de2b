"""Golden checks for the GPU benchmark shapes, computed ahead on the CPU so that ``make gpu-check`` only compares.

    python benchmarks/golden.py write [--scale S] [--only NAME]   # CPU, float64, C++ cpu backend -> golden/*.pt
    python benchmarks/golden.py check OUT.json [--backends cuda,triton]  # GPU: compare, write a summary

Inputs are never stored: each case draws them from its seed with a CPU ``torch.Generator`` (the same on
any machine), so a golden file holds only the seed, the shape and reduced results of the float64 run:
per-channel sums of the output and per-channel L2 norms of every gradient (a few KB). ``--scale`` divides
the length (tests and dry runs); the check uses the scale written in the file.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

import anatokernels as ak

GOLDEN = Path(__file__).resolve().parent / "golden"
ORDERS = ("zyx", "-zyx", "yxz")
# name -> (op, shape, seed): the benchmark shapes of ``make gpu-check``
CASES = {
    "scan3d_64cubed": ("selective_scan3d", dict(b=2, k=3, d=96, n=16, spatial=(64, 64, 64)), 1),
    "scan_mamba": ("selective_scan", dict(b=8, d=1536, n=16, length=2048), 2),
    "order_conv_64cubed": ("order_conv1d", dict(b=2, k=3, d=96, w=4, spatial=(64, 64, 64)), 3),
}


def _scaled(shape: dict, scale: int) -> dict:
    shape = dict(shape)
    if "spatial" in shape:
        z, y, x = shape["spatial"]
        shape["spatial"] = (max(1, z // scale), y, x)
    if "length" in shape:
        shape["length"] = max(1, shape["length"] // scale)
    return shape


def inputs(op: str, shape: dict, seed: int) -> list[torch.Tensor | None]:
    """The case's float32 inputs on the CPU, from its seed."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*size, scale=1.0):
        return torch.randn(*size, generator=gen) * scale

    if op == "order_conv1d":
        length = shape["spatial"][0] * shape["spatial"][1] * shape["spatial"][2]
        b, k, d, w = shape["b"], shape["k"], shape["d"], shape["w"]
        return [randn(b, k, d, length), randn(k, d, w, scale=0.5), randn(k, d)]
    if op == "selective_scan3d":
        b, k, d, n = shape["b"], shape["k"], shape["d"], shape["n"]
        length = shape["spatial"][0] * shape["spatial"][1] * shape["spatial"][2]
        lead, per_order = (b, k), (k, d)
    else:
        b, d, n, length = shape["b"], shape["d"], shape["n"], shape["length"]
        lead, per_order = (b,), (d,)
    return [randn(*lead, d, length), randn(*lead, d, length, scale=0.5),
            -(torch.rand(*per_order, n, generator=gen) * 2 + 0.1), randn(*lead, n, length), randn(*lead, n, length),
            randn(*per_order), randn(b, d, length), randn(*per_order, scale=0.3)]


def run(op: str, shape: dict, tensors: list, backend: str) -> dict[str, torch.Tensor]:
    """Forward + backward (upstream gradient from the output's own seed-free rule) -> reduced float64 results."""
    leaves = [t.detach().clone().requires_grad_() for t in tensors]
    if op == "order_conv1d":
        out = ak.order_conv1d(*leaves, spatial_shape=shape["spatial"], orders=ORDERS, backend=backend)
        channel = 2
    elif op == "selective_scan3d":
        out = ak.selective_scan3d(*leaves, delta_softplus=True, spatial_shape=shape["spatial"], orders=ORDERS,
                                  backend=backend)
        channel = 1
    else:
        out = ak.selective_scan(*leaves, delta_softplus=True, backend=backend)
        channel = 1
    out.backward(torch.cos(out.detach()))  # deterministic, bounded, depends on the output only
    dims = [i for i in range(out.dim()) if i != channel]
    reduced = {"out_sum": out.detach().double().sum(dims).cpu()}
    for i, t in enumerate(leaves):
        g = t.grad.double()
        reduced[f"grad{i}_norm"] = g.flatten(0, -1).norm().reshape(1).cpu() if g.dim() < 2 else \
            g.movedim(-2 if g.dim() == 2 else _channel_dim(op, g.dim()), 0).flatten(1).norm(dim=1).cpu()
    return reduced


def _channel_dim(op: str, ndim: int) -> int:
    """The channel dim (D) of a gradient of ``ndim`` dims; the grouped B/C grads reduce over their N dim."""
    if op == "order_conv1d":
        return 1  # dx (B, K, D, L), dweight (K, D, W) and dbias (K, D) all keep D at dim 1 or 2
    return {3: 1, 4: 2}.get(ndim, 1)


def write(scale: int, only: str | None) -> None:
    GOLDEN.mkdir(exist_ok=True)
    for name, (op, shape, seed) in CASES.items():
        if only and name != only:
            continue
        shape = _scaled(shape, scale)
        start = time.perf_counter()
        tensors = [t.double() for t in inputs(op, shape, seed)]
        reduced = run(op, shape, tensors, "cpu")
        torch.save({"op": op, "shape": shape, "seed": seed, "scale": scale, "reduced": reduced},
                   GOLDEN / f"{name}.pt")
        print(f"{name}: {shape} in {time.perf_counter() - start:.1f}s", flush=True)


def check(out_path: Path, backends: list[str]) -> int:
    """Compare each backend's float32 run on the GPU with the golden files; write what finished as it goes."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    results: list[dict] = []
    for path in sorted(GOLDEN.glob("*.pt")):
        golden = torch.load(path)
        tensors = [t.to(device) for t in inputs(golden["op"], golden["shape"], golden["seed"])]
        for backend in backends:
            row = {"case": path.stem, "backend": backend, "device": device}
            try:
                got = run(golden["op"], golden["shape"], tensors, backend)
                row["rel_err"] = {k: float((got[k] - v).norm() / v.norm().clamp_min(1e-300))
                                  for k, v in golden["reduced"].items()}
                row["max_rel_err"] = max(row["rel_err"].values())
                row["ok"] = row["max_rel_err"] < 1e-3
            except Exception as exc:  # noqa: BLE001  (an unavailable backend or a failing kernel is a result)
                row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                row["ok"] = False
            results.append(row)
            out_path.write_text(json.dumps(results, indent=1) + "\n")
            print(json.dumps(row), flush=True)
    return 0 if results and all(r["ok"] for r in results) else 1


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write")
    w.add_argument("--scale", type=int, default=1)
    w.add_argument("--only")
    c = sub.add_parser("check")
    c.add_argument("out", type=Path)
    c.add_argument("--backends", default="cuda,triton")
    args = parser.parse_args(argv)
    if args.cmd == "write":
        write(args.scale, args.only)
        return 0
    return check(args.out, args.backends.split(","))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
