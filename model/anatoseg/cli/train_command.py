"""``anato train DATA OUT``: stage-3 training (single process, or DDP under torchrun)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from anatoseg.cli.app import app
from anatoseg.cli.options import ConfigFile, Device, Layout, NoProgress, config_overrides


@app.command("train")
def train(
    data: Annotated[Path, typer.Argument(help="Training cases: autoPET folder, nnU-Net raw folder or "
                                         "manifest .json.")],
    out: Annotated[Path, typer.Argument(help="Run folder: checkpoint.pt, model.pt, log.csv, config.yaml.")],
    config: ConfigFile = None,
    overrides: Annotated[list[str] | None, typer.Option(
        "--set", help="Override one value: section.key=value (repeatable), e.g. optim.lr=3e-4 or "
        "model.net.widths=[8,16,32,64].")] = None,
    arch: Annotated[str | None, typer.Option("--arch", help="anatoseg, anatoseg_noprompt, unet, segresnet, "
                                             "swinunetr or unetr (model.arch).")] = None,
    preset: Annotated[str | None, typer.Option("--preset", help="Network size: tiny or base (model.preset).")
                      ] = None,
    steps: Annotated[int | None, typer.Option("--steps", help="Optimisation steps (train.steps).")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Global batch (train.batch_size).")
                          ] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Learning rate (optim.lr).")] = None,
    patch_size: Annotated[str | None, typer.Option("--patch-size", help="Z,Y,X voxels (data.patch_size).")
                          ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed of everything random (train.seed).")] = None,
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
    stop_at: Annotated[int | None, typer.Option(
        "--stop-at", help="Stop after this step (writing a checkpoint); continue later with --resume.")] = None,
    fingerprint: Annotated[Path | None, typer.Option(
        "--fingerprint", help="Dataset fingerprint JSON (default: OUT/fingerprint.json, computed if missing).")
                           ] = None,
    layout: Layout = None,
    device: Device = None,
    no_progress: NoProgress = False,
) -> None:
    """Train the stage-3 lesion segmentation network. Multi-GPU: torchrun --nproc_per_node N -m anatoseg train ..."""
    from anatoseg.stage3.run import run_train

    typed = [("model.arch", arch), ("model.preset", preset), ("train.steps", steps),
             ("train.batch_size", batch_size), ("optim.lr", lr), ("data.patch_size", patch_size),
             ("train.seed", seed)]
    settings = config_overrides(overrides, typed)
    if gradient_checkpointing:
        settings.append("model.net.gradient_checkpointing=true")
    if no_prompts:
        settings.append("model.net.use_prompts=false")
    result = run_train(data, out, config_file=config, overrides=settings, init=init, organs_dir=organs,
                       organ_model=organ_model, resume=resume, stop_at=stop_at, fingerprint=fingerprint,
                       layout=layout, device=device, progress=not no_progress)
    if result.rank != 0:
        return
    if result.model is not None:
        val = "-" if result.val_dice is None else f"{result.val_dice:.3f}"
        typer.echo(f"step {result.step}: loss {result.loss:.4f}, val Dice {val}; model written to {result.model}")
    else:
        typer.echo(f"stopped at step {result.step}; continue with --resume ({result.checkpoint})")
