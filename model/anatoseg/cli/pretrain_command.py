"""``anato pretrain DATA OUT``: stage-2 cross-modal masked-patch pretraining of the PET/CT encoders."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from anatoseg.cli import options as opt
from anatoseg.cli.app import app


@app.command("pretrain")
def pretrain(
    data: Annotated[Path, typer.Argument(help="Cases: autoPET folder, nnU-Net raw folder or manifest .json.")],
    out: Annotated[Path, typer.Argument(help="Run folder: encoders.pt (for `anato train --init`), log.csv, "
                                        "config.yaml.")],
    config: opt.ConfigFile = None,
    overrides: opt.Overrides = None,
    preset: Annotated[str | None, typer.Option("--preset", help="Network size: tiny or base (model.preset); "
                                               "must match the stage-3 run that loads the encoders.")] = None,
    steps: opt.Steps = None,
    batch_size: opt.BatchSize = None,
    lr: opt.LearningRate = None,
    crop_size: Annotated[str | None, typer.Option(
        "--crop-size", help="Crop size in voxels (Z, Y, X): Z,Y,X (crop.size).")] = None,
    mask_patch: Annotated[str | None, typer.Option("--mask-patch", help="Mask patch size in voxels (Z, Y, X): "
                                                   "Z,Y,X (mask.patch_size).")] = None,
    mask_ratio: Annotated[float | None, typer.Option("--mask-ratio", help="Fraction of patches masked in each "
                                                     "modality (mask.ratio).")] = None,
    mask_mode: Annotated[str | None, typer.Option("--mask-mode", help="How the PET and CT masks relate: "
                                                  "independent (default), complementary or shared "
                                                  "(mask.mode).")] = None,
    pet_target: Annotated[str | None, typer.Option("--pet-target", help="PET reconstruction target: suv "
                                                   "(default), log_suv or patch (loss.pet_target).")] = None,
    no_intra: Annotated[bool, typer.Option("--no-intra", help="Ablation: no PET-from-PET / CT-from-CT "
                                           "reconstruction.")] = False,
    no_cross: Annotated[bool, typer.Option("--no-cross", help="Ablation: no CT-from-PET / PET-from-CT "
                                           "reconstruction.")] = False,
    no_align: Annotated[bool, typer.Option("--no-align", help="Ablation: no InfoNCE alignment (positions "
                                           "visible in both modalities).")] = False,
    seed: opt.Seed = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue exactly from OUT/encoders.pt (same cases; "
                                         "its config, then --config and the other options).")] = False,
    fingerprint: Annotated[Path | None, typer.Option(
        "--fingerprint", help="Dataset fingerprint JSON (default: OUT/fingerprint.json, computed if missing); "
        "give stage 3 the same one.")] = None,
    layout: opt.Layout = None,
    device: opt.Device = None,
    no_progress: opt.NoProgress = False,
) -> None:
    """Pretrain the PET and CT encoders (a patch mask per modality, intra- and cross-modal reconstruction
    through one shared latent space, InfoNCE at positions visible in both)."""
    from anatoseg.stage2.config import PretrainConfig
    from anatoseg.stage2.run import run_pretrain

    typed = [("model.preset", preset), ("crop.size", crop_size), ("mask.patch_size", mask_patch),
             ("mask.ratio", mask_ratio), ("mask.mode", mask_mode), ("loss.pet_target", pet_target)]
    settings = opt.option_overrides(PretrainConfig, overrides, typed, steps=steps, batch_size=batch_size, lr=lr,
                                seed=seed)
    settings += [f"loss.{term}=false" for term, off in (("intra", no_intra), ("cross", no_cross),
                                                         ("align", no_align)) if off]
    result = run_pretrain(data, out, config_file=config, overrides=settings, fingerprint=fingerprint,
                          layout=layout, device=device, progress=not no_progress, resume=resume)
    last = result.losses[-1]
    terms = ", ".join(f"{name} {value:.4f}" for name, value in last.items() if name not in ("step", "loss"))
    typer.echo(f"step {result.steps}: loss {last['loss']:.4f} ({terms}); encoders written to {result.checkpoint}")
