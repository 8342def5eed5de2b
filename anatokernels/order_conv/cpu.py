"""C++/OpenMP backend: ``torch.ops.anatokernels.order_conv1d_{fwd,bwd}_cpu`` (csrc/order_conv/order_conv_cpu.cpp)."""

from functools import partial

from anatokernels.order_conv import _compiled

forward = partial(_compiled.forward, "cpu")
backward = partial(_compiled.backward, "cpu")
