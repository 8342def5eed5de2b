"""C++/OpenMP backend: ``torch.ops.anatokernels.masked_patch_{gather,scatter}_cpu`` (csrc/masked_patch/)."""

from functools import partial

from anatokernels.masked_patch import _compiled

gather = partial(_compiled.gather, "cpu")
scatter = partial(_compiled.scatter, "cpu")
