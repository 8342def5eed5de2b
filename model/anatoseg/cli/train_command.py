"""``anato train DATA OUT``: stage-3 training (single process, or DDP under torchrun)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from anatoseg.cli import options as opt
from anatoseg.cli.app import app

#: Every name of :data:`anatoseg.nets.ARCHITECTURES` (written out: the CLI imports no torch; a test compares).
ARCH_HELP = ("anatoseg, anatoseg_noprompt; the anatomy baselines anatoseg_organ_onehot, anatoseg_organ_embed "
             "(organ maps as input channels) and anatoseg_organ_aux (an auxiliary organ head); unet, segresnet, "
             "swinunetr or unetr (model.arch).")


@app.command("train")
def train(
    data: Annotated[Path, typer.Argument(help="Training cases: autoPET folder, nnU-Net raw folder or "
                                         "manifest .json.")],
    out: Annotated[Path, typer.Argument(help="Run folder: checkpoint.pt, model.pt, log.csv, config.yaml.")],
    config: opt.ConfigFile = None,
    overrides: opt.Overrides = None,
    arch: Annotated[str | None, typer.Option("--arch", help=ARCH_HELP)] = None,
    preset: Annotated[str | None, typer.Option("--preset", help="Network size: tiny or base (model.preset).")
                      ] = None,
    steps: opt.Steps = None,
    batch_size: opt.BatchSize = None,
    lr: opt.LearningRate = None,
    patch_size: Annotated[str | None, typer.Option(
        "--patch-size", help="Patch size in voxels (Z, Y, X): Z,Y,X (data.patch_size).")] = None,
    seed: opt.Seed = None,
    gradient_checkpointing: Annotated[bool, typer.Option(
        "--gradient-checkpointing", help="Recompute the Mamba blocks in the backward.")] = False,
    no_prompts: Annotated[bool, typer.Option("--no-prompts", help="Ablation: no organ prompts.")] = False,
    organs: Annotated[Path | None, typer.Option(
        "--organs", help="Folder of stage-1 organ label maps <case_id>.nii.gz (default: the dataset's own "
        "organ labels).")] = None,
    organ_model: Annotated[Path | None, typer.Option(
        "--organ-model", help="Stage-1 model that made --organs; recorded so that `anato predict` can make "
        "prompts itself.")] = None,
    init: Annotated[Path | None, typer.Option("--init", help="Stage-2 checkpoint for the PET/CT encoders.")
                    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from OUT/checkpoint.pt exactly.")] = False,
    allow_other_data: Annotated[bool, typer.Option(
        "--allow-other-data", help="With --resume: continue on DATA even though its cases differ from the "
        "run's.")] = False,
    stop_at: Annotated[int | None, typer.Option(
        "--stop-at", help="Stop after this step (writing a checkpoint); continue later with --resume.")] = None,
    fingerprint: Annotated[Path | None, typer.Option(
        "--fingerprint", help="Dataset fingerprint JSON (default: OUT/fingerprint.json, computed if missing).")
                           ] = None,
    layout: opt.Layout = None,
    device: opt.Device = None,
    no_progress: opt.NoProgress = False,
) -> None:
    """Train the stage-3 lesion segmentation network. Multi-GPU: torchrun --nproc_per_node N -m anatoseg train ..."""
    from anatoseg.stage3.config import Config
    from anatoseg.stage3.run import run_train

    typed = [("model.arch", arch), ("model.preset", preset), ("data.patch_size", patch_size)]
    settings = opt.option_overrides(Config, overrides, typed, steps=steps, batch_size=batch_size, lr=lr, seed=seed)
    if gradient_checkpointing:
        settings.append("model.net.gradient_checkpointing=true")
    if no_prompts:
        settings.append("model.net.use_prompts=false")
    result = run_train(data, out, config_file=config, overrides=settings, init=init, organs_dir=organs,
                       organ_model=organ_model, resume=resume, stop_at=stop_at, fingerprint=fingerprint,
                       layout=layout, device=device, progress=not no_progress, allow_other_data=allow_other_data)
    if result.rank != 0:
        return
    if result.model is not None:
        val = "-" if result.val_dice is None else f"{result.val_dice:.3f}"
        typer.echo(f"step {result.step}: loss {result.loss:.4f}, val Dice {val}; model written to {result.model}")
    else:
        typer.echo(f"stopped at step {result.step}; continue with --resume ({result.checkpoint})")
