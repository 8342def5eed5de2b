"""How far a trained anatoseg network's prompt paths move its decoder features.

    python -m anatoseg.experiments.prompt_strength MODEL [MODEL ...] --data MANIFEST_OR_FOLDER [--organs DIR]
        [--cases N]

For every prompted stage s, over all sliding windows of the first N cases (organ maps as ``anato predict``
reads them, :class:`~anatoseg.inference.predict.OrganSource`):

- ``inject``: ``‖inject(x) − x‖ / ‖x‖``, the dense prompt injection's share of the features, and the mean
  ``|gate|`` of its zero-initialised per-channel gate;
- ``hcca``: ``‖hcca(x) − x‖ / ‖x‖``, the cross-attention's residual update (its output projection starts at 0);
- the occupancy bias's learned per-head scale (starts at 1).

The prompt paths start shut, so every ratio is 0 at initialisation; a ratio still near 0 after training says
the network learned to leave the prompts out, whatever their design. Norms are summed over every window and
voxel (``‖·‖`` over the whole run), in float64.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch import nn

from anatoseg.errors import AnatoError


class UpdateNorms:
    """Forward hooks on ``modules`` ({name: module whose first input is the features x and whose output is the
    updated x}) summing ``‖out − x‖²`` and ``‖x‖²``; :meth:`ratios` gives ``{name: ‖out − x‖ / ‖x‖}``."""

    def __init__(self, modules: dict[str, nn.Module]):
        self.sums: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
        self.handles = [module.register_forward_hook(self._hook(name)) for name, module in modules.items()]

    def _hook(self, name: str):
        def record(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            x = inputs[0].double()
            sums = self.sums[name]
            sums[0] += float((output.double() - x).square().sum())
            sums[1] += float(x.square().sum())
        return record

    def ratios(self) -> dict[str, float]:
        return {name: (delta / base) ** 0.5 if base > 0 else float("nan") for name, (delta, base) in self.sums.items()}

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def prompt_modules(net: nn.Module) -> dict[str, nn.Module]:
    """``{"inject <s>" | "hcca <s>": module}`` of an anatoseg network's prompted stages; ValueError when the
    network has no prompts (a baseline, or ``model.net.use_prompts`` false)."""
    if not getattr(net, "config", None) or not getattr(net.config, "use_prompts", False):
        raise ValueError("the model has no organ prompts (a no-prompt anatoseg network or another architecture)")
    found = {f"hcca {s}": module for s, module in net.hcca.items()}
    if net.config.dense_prompts:
        found.update({f"inject {s}": module for s, module in net.inject.items()})
    return dict(sorted(found.items(), key=lambda item: (int(item[0].split()[1]), item[0])))


def learned_values(net: nn.Module) -> dict[str, list[float]]:
    """The prompt paths' own parameters: ``gate <s>`` mean |gate| (one value) and ``occupancy scale <s>``
    (one per head)."""
    values = {}
    if net.config.dense_prompts:
        values.update({f"gate {s}": [float(m.gate.detach().abs().mean())] for s, m in net.inject.items()})
    if net.config.occupancy_bias:
        values.update({f"occupancy scale {s}": m.scale.detach().tolist() for s, m in net.occupancy_bias.items()})
    return values


def measure(model: str | Path, cases: Iterable, organs_dir: Path | None, device: str = "cpu") -> dict:
    """``{"ratios": {module: ratio}, "learned": learned_values, "cases": n}`` of the stage-3 checkpoint
    ``model`` over ``cases`` (:class:`~anatoseg.data.CaseFiles`)."""
    from anatoseg.data.preprocess import preprocess_case
    from anatoseg.data.volumes import pet_ct_channels
    from anatoseg.inference.predict import OrganSource, Predictor

    predictor = Predictor.from_checkpoint(model, device=device, mirror=False)
    norms = UpdateNorms(prompt_modules(predictor.net))
    source, count = OrganSource(predictor, organs_dir), 0
    try:
        for files in cases:
            pre = preprocess_case(source.for_case(source.files_for(files)), predictor.preprocessing)
            predictor.probability(pet_ct_channels(pre.image), pre.organs, description=files.case_id)
            count += 1
    finally:
        norms.close()
    return {"ratios": norms.ratios(), "learned": learned_values(predictor.net), "cases": count}


def table(results: dict[str, dict]) -> list[str]:
    """Markdown lines: one row per model, a column per prompt module and learned value ("–" where a model
    lacks it)."""
    ratio_keys = sorted({k for r in results.values() for k in r["ratios"]}, key=lambda k: (k.split()[0], k))
    learned_keys = sorted({k for r in results.values() for k in r["learned"]})
    head = ["model", "cases", *(f"‖Δ‖/‖x‖ {k}" for k in ratio_keys), *learned_keys]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, result in results.items():
        cells = [name, str(result["cases"]), *(f"{result['ratios'][k]:.4f}" if k in result["ratios"] else "–"
                                               for k in ratio_keys)]
        cells += [" ".join(f"{v:.3f}" for v in result["learned"].get(k, [])) or "–" for k in learned_keys]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m anatoseg.experiments.prompt_strength",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+", type=Path, help="stage-3 model.pt / checkpoint.pt files")
    parser.add_argument("--data", required=True, help="cases: a phantom manifest or a dataset folder")
    parser.add_argument("--organs", type=Path, help="organ maps <case_id>.nii.gz (default: as anato predict)")
    parser.add_argument("--cases", type=int, default=4, help="the first N cases (default 4)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.cases < 1:
            raise ValueError(f"--cases must be at least 1, got {args.cases}")
        from anatoseg.data import find_cases

        cases = find_cases(args.data)[:args.cases]
        results = {str(model): measure(model, cases, args.organs, args.device) for model in args.models}
    except (AnatoError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("\n".join(table(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
