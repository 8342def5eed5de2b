"""The variants the protocol compares, as data: a registry of networks, named groups, and the
no-learning sanity rows.

A network variant is ``{"arch", "prompts", "init", "set"}``:

- ``arch``: a stage-3 ``model.arch`` (:func:`anatoseg.nets.build_network`);
- ``prompts``: where the organ maps come from, for whatever the variant reads them for (prompts,
  organ input channels, an auxiliary organ target, post-processing): ``"pseudo"`` (stage-1
  pseudo-labels in training, the stage-1 model's maps at test), ``"teacher"`` (the stage-1 teacher's
  maps in training and at test: no student), ``"gt"`` (the phantom's true organ
  maps in training and at test) or None (no organ input). The organ hard-negative patches of stage-3 training
  are centred on the same maps, and on the student's when the variant reads none, so every variant but
  ``"gt"`` and ``"teacher"`` draws the same patch stream (:func:`.units.train_unit`);
- ``init``: ``"stage2"`` (the stage-2 pretrained encoders) or None (random initialisation);
- ``set``: stage-3 config overrides ``{"section.key": value}`` of this variant, applied after the
  protocol's own (so a variant can change anything ``anato train --set`` can);
- ``stage2_set`` (optional): stage-2 config overrides of a variant whose encoders differ from the shared
  stage 2's (an encoder architecture change: the shared encoders would not load), with ``init`` ``"stage2"``:
  the variant is pretrained once per run folder with them (:func:`.stages.prepare`), every seed of it
  initialised from that;
- ``trained_as`` (optional): the name of another variant whose trained model this one predicts with
  instead of training its own (same seed), its ``set`` then holding only the test-time settings of
  :data:`TEST_TIME` (the organ-mask post-processing is the no-prompt network with a post-processing:
  training it again would cost a unit and give another network). Such a unit runs after the one it
  reuses (:func:`anatoseg.experiments.protocol.run.run`) and trains that variant's model in that
  variant's folder when it is not there yet.

Every variant trains through :func:`anatoseg.stage3.run.run_train` exactly as ``anato train``
would with those options, so a change of the stage-3 recipe reaches every variant. A new ablation
is a new entry here (and, if wanted, in :data:`GROUPS`), not a new code path.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from anatoseg.errors import ConfigError

REFERENCE = "full method"
"""The variant every other is compared with (:data:`anatoseg.experiments.stats.REFERENCE`)."""

PROMPTS = ("pseudo", "teacher", "gt", None)
INITS = ("stage2", None)

SUPPRESSED_ORGANS = "brain,urinary_bladder,kidney_left,kidney_right,ureters,heart"
"""``infer.suppress_organs`` of the organ-mask post-processing variant (issue 17): predicted components
lying mostly inside these organs are removed as physiological uptake."""

_PSEUDO = {"prompts": "pseudo", "init": "stage2"}
NO_MAMBA = {"model.net.mamba_depths": [0, 0, 0, 0]}
"""No Mamba block in any of the (four) stages of both presets: convolutional encoders only. The prompt encoder's
branches scan only at stages with Mamba blocks (:class:`anatoseg.nets.prompt_encoder.PromptEncoder`), so they lose
their scans too."""
VARIANTS: dict[str, dict] = {
    "full method": {"arch": "anatoseg", **_PSEUDO, "set": {}},
    "no prompts": {"arch": "anatoseg", "prompts": None, "init": "stage2", "set": {"model.net.use_prompts": False}},
    "no pretraining": {"arch": "anatoseg", "prompts": "pseudo", "init": None, "set": {}},
    "GT organs": {"arch": "anatoseg", "prompts": "gt", "init": "stage2", "set": {}},
    "teacher-only prompts": {"arch": "anatoseg", "prompts": "teacher", "init": "stage2", "set": {}},
    # issue 19: the image encoders without their Mamba blocks, pretrained in stage 2 without them as well
    "no Mamba blocks": {"arch": "anatoseg", **_PSEUDO, "set": NO_MAMBA, "stage2_set": NO_MAMBA},
    "UNet": {"arch": "unet", "prompts": None, "init": None, "set": {}},
    "SegResNet": {"arch": "segresnet", "prompts": None, "init": None, "set": {}},
    "SwinUNETR": {"arch": "swinunetr", "prompts": None, "init": None, "set": {}},
    "UNETR": {"arch": "unetr", "prompts": None, "init": None, "set": {}},
    # the network's ablation switches (issue 17, item 5): what each part of the prompting adds
    "pooled tokens only": {"arch": "anatoseg", **_PSEUDO,
                           "set": {"model.net.occupancy_bias": False, "model.net.dense_prompts": False}},
    "+ occupancy bias": {"arch": "anatoseg", **_PSEUDO, "set": {"model.net.dense_prompts": False}},
    "+ dense injection": {"arch": "anatoseg", **_PSEUDO, "set": {"model.net.occupancy_bias": False}},
    "no hypernetwork": {"arch": "anatoseg", **_PSEUDO, "set": {"model.net.hypernet": False}},
    # the stage-2 encoders fine-tuned at the new layers' rate instead of 0.25x (first protocol table: the 0.25x
    # rate kept the pretrained variants on the all-background plateau at 600 steps; README, "Results")
    "encoders at full rate": {"arch": "anatoseg", **_PSEUDO, "set": {"optim.pretrained_lr_scale": 1.0}},
    # the simple ways of using the same stage-1 organ maps (issue 17, item 4)
    "organ channels (one-hot)": {"arch": "anatoseg_organ_onehot", **_PSEUDO, "set": {}},
    "organ channels (embedded)": {"arch": "anatoseg_organ_embed", **_PSEUDO, "set": {}},
    "organ auxiliary head": {"arch": "anatoseg_organ_aux", **_PSEUDO, "set": {}},
    # the no-prompt network's own model, post-processed; "pseudo": the stage-1 maps the post-processing reads at test
    "organ-mask post-processing": {"arch": "anatoseg", **_PSEUDO, "trained_as": "no prompts",
                                   "set": {"infer.suppress_organs": SUPPRESSED_ORGANS}},
}
"""Network variants by name (module docstring)."""

TRUE_ORGANS = ", GT organs"
"""Suffix of a variant's form fed the phantom's true organ maps instead of the stage-1 ones (issue 17: each
ablation switch and anatomy baseline with true and with stage-1 organs); "GT organs" is the full method's."""
VARIANTS.update({name + TRUE_ORGANS: {**VARIANTS[name], "prompts": "gt"}
                 for name in ("pooled tokens only", "+ occupancy bias", "+ dense injection", "no hypernetwork",
                              "organ channels (one-hot)", "organ channels (embedded)", "organ auxiliary head",
                              "organ-mask post-processing")})

TEST_TIME = {"infer.suppress_organs": "suppress_organs", "infer.mirror": "mirror", "infer.overlap": "overlap"}
"""The settings a ``trained_as`` variant may set: ``infer`` keys and the
:meth:`anatoseg.inference.predict.Predictor.from_checkpoint` argument each becomes."""

TABLE = ["full method", "no prompts", "no pretraining", "GT organs", "UNet", "SegResNet", "SwinUNETR", "UNETR"]
GROUPS: dict[str, list[str]] = {
    "table": TABLE,
    # config.py: at 1200 steps SwinUNETR (4.1 CPU-s per step) and SegResNet (0.79) do not fit the CPU budget
    "table-cpu": [name for name in TABLE if name not in ("SwinUNETR", "SegResNet")],
    "ablations": ["full method", "no prompts", "no pretraining", "GT organs", "teacher-only prompts",
                  "no Mamba blocks", "pooled tokens only", "+ occupancy bias", "+ dense injection", "no hypernetwork",
                  "encoders at full rate"],
    "anatomy": ["full method", "no prompts", "organ channels (one-hot)", "organ channels (embedded)",
                "organ auxiliary head", "organ-mask post-processing"],
    "baselines": ["full method", "UNet", "SegResNet", "SwinUNETR", "UNETR"],
    # issue 17's attribution, read against the no-prompt network (--reference "no prompts"): each part of the
    # prompting and the simple uses of the same stage-1 organ maps, and the full method with true organs
    "prompting": ["full method", "no prompts", "GT organs", "pooled tokens only", "+ occupancy bias",
                  "+ dense injection", "no hypernetwork", "organ channels (one-hot)", "organ channels (embedded)",
                  "organ auxiliary head", "organ-mask post-processing"],
    # issue 19's results table: the full method, its ablations, the anatomy baselines and the MONAI networks
    "results": ["full method", "no prompts", "no pretraining", "GT organs", "teacher-only prompts", "no Mamba blocks",
                "UNet", "SegResNet", "SwinUNETR", "UNETR", "pooled tokens only", "no hypernetwork",
                "organ channels (one-hot)", "organ auxiliary head", "organ-mask post-processing"],
    # the same with the phantom's true organ maps (TRUE_ORGANS)
    "prompting-gt": ["no prompts", "GT organs", *(name for name in VARIANTS if name.endswith(TRUE_ORGANS))],
}
"""Named lists of variants, usable wherever a variant name is (``--variants ablations``)."""
DEFAULT_GROUP = "table"
"""The default of :func:`resolve`; a run without ``--variants`` takes its scale's ``group`` (``table`` on a
GPU, ``table-cpu`` at ``--scale cpu``, config.py)."""

UPTAKE_ORGANS = ("brain", "heart", "kidney_left", "kidney_right", "urinary_bladder", "ureters", "bowel", "thyroid",
                 "brown_fat", "salivary_glands", "uterus_ovaries")
"""Organs of physiological FDG uptake that the sanity rows remove (the phantom's false-positive sources
with an organ label, muscle excepted: it is everywhere and would remove lesions next to it)."""

SANITY: dict[str, dict] = {
    "SUV ≥ 2.5": {"method": "fixed", "suv_threshold": 2.5, "exclude": UPTAKE_ORGANS},
    "SUV ≥ 40 % SUVmax": {"method": "relative", "fraction": 0.4, "suvmax_region": "outside_organs",
                          "exclude": UPTAKE_ORGANS},
}
"""No-learning rows: keyword arguments of :func:`anatoseg.experiments.sanity.sanity_baseline` (the
organ mask removed is the case's true organ map, :data:`UPTAKE_ORGANS`; components under 0.1 ml
dropped)."""


def check_variant(name: str, spec: Mapping, registry: Mapping[str, Mapping] = VARIANTS) -> None:
    """ConfigError unless ``spec`` is a well-formed network variant of ``registry`` (module docstring)."""
    missing = {"arch", "prompts", "init", "set"} - set(spec)
    if missing:
        raise ConfigError(f"variant {name!r}: missing {sorted(missing)}")
    if spec["prompts"] not in PROMPTS or spec["init"] not in INITS or not isinstance(spec["set"], Mapping):
        raise ConfigError(f"variant {name!r}: prompts must be one of {PROMPTS}, init one of {INITS}, set a "
                          f"mapping; got {spec['prompts']!r}, {spec['init']!r}, {spec['set']!r}")
    stage2 = spec.get("stage2_set")
    if stage2 is not None and (not isinstance(stage2, Mapping) or spec["init"] != "stage2"):
        raise ConfigError(f"variant {name!r}: stage2_set must be a mapping of stage-2 overrides, with init "
                          f"'stage2'; got {stage2!r} with init {spec['init']!r}")
    source = spec.get("trained_as")
    if source is None:
        return
    if source not in registry or registry[source].get("trained_as") is not None:
        raise ConfigError(f"variant {name!r}: trained_as must name a variant that trains its own model, "
                          f"got {source!r}")
    if spec["arch"] != registry[source]["arch"] or spec["init"] != registry[source]["init"]:
        raise ConfigError(f"variant {name!r}: arch and init must be those of {source!r}, whose model it uses")
    other = sorted(set(spec["set"]) - set(TEST_TIME))
    if other:
        raise ConfigError(f"variant {name!r} uses the model of {source!r}: it can set only "
                          f"{', '.join(TEST_TIME)}, not {', '.join(other)}")


def test_time(spec: Mapping) -> dict:
    """The :meth:`~anatoseg.inference.predict.Predictor.from_checkpoint` arguments of a ``trained_as``
    variant's ``set`` (empty for a variant that trains its own model: its settings are in its config)."""
    if spec.get("trained_as") is None:
        return {}
    return {TEST_TIME[key]: value for key, value in spec["set"].items()}


def resolve(names: Sequence[str] | None, registry: Mapping[str, Mapping] = VARIANTS,
            groups: Mapping[str, Sequence[str]] = GROUPS, default: str = DEFAULT_GROUP,
            reference: str = REFERENCE) -> list[str]:
    """Variant names from names and group names (None: the group ``default``, e.g. a scale's ``group``), in
    registry order, without repeats; the ``reference`` variant is always included (the comparisons need it):
    ConfigError when the registry lacks it."""
    wanted = set(groups.get(default, registry)) if not names else set()
    for name in names or ():
        if name in groups:
            wanted.update(groups[name])
        elif name in registry:
            wanted.add(name)
        else:
            raise ConfigError(f"unknown variant or group {name!r}; variants: {', '.join(registry)}; "
                              f"groups: {', '.join(groups)}")
    if reference not in registry:
        raise ConfigError(f"unknown reference variant {reference!r}; variants: {', '.join(registry)}")
    wanted.add(reference)
    for name in wanted:
        check_variant(name, registry[name], registry)
    return [name for name in registry if name in wanted]


def overrides(settings: Mapping[str, object]) -> list[str]:
    """``{"section.key": value}`` as ``anato train --set`` strings (values written as JSON, which the
    config parser reads as YAML)."""
    return [f"{key}={json.dumps(value)}" for key, value in settings.items()]
