"""CUDA backend: ``torch.ops.anatokernels.order_conv1d_{fwd,bwd}_cuda`` (csrc/order_conv/order_conv_cuda.cu)."""

from functools import partial

from anatokernels.order_conv import _compiled

forward = partial(_compiled.forward, "cuda")
backward = partial(_compiled.backward, "cuda")
