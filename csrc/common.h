// Shared argument checks for the anatokernels C++ entry points.
#pragma once
#include <torch/library.h>
#include <ATen/ATen.h>

#define ANATO_CHECK_DEVICE(t, dev) \
  TORCH_CHECK((t).device().type() == (dev), #t " must be on ", (dev), ", got ", (t).device())
#define ANATO_CHECK_CONTIGUOUS(t) TORCH_CHECK((t).is_contiguous(), #t " must be contiguous")
#define ANATO_CHECK_DIM(t, n) TORCH_CHECK((t).dim() == (n), #t " must be ", (n), "-D, got ", (t).dim(), "-D")
#define ANATO_CHECK_DTYPE(t, dt) \
  TORCH_CHECK((t).scalar_type() == (dt), #t " must be ", (dt), ", got ", (t).scalar_type())
