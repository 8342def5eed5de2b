"""CUDA backend: ``torch.ops.anatokernels.masked_patch_{gather,scatter}_cuda`` (csrc/masked_patch/*.cu)."""

from functools import partial

from anatokernels.masked_patch import _compiled

gather = partial(_compiled.gather, "cuda")
scatter = partial(_compiled.scatter, "cuda")
