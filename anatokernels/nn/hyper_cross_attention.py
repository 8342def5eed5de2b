"""HyperCrossAttention: image tokens attend to organ-prompt tokens with hypernetwork-generated weights.

This is our concrete reading of the paper's hypernet-controlled cross-attention
(HCCA), whose code is not public. The choices below are ours:

- Pre-normalisation and a residual: ``y = x + attn(LayerNorm(x))``, per token
  over the C channels; the prompts get their own LayerNorm.
- Hypernetwork input: the masked mean of the normalised prompts (zero for a
  sample without prompts) concatenated with the mean of the normalised image
  tokens, (B, prompt_dim + C).
- Hypernetwork: Linear(prompt_dim + C, hyper_hidden) → GELU →
  Linear(hyper_hidden, rank·2C + H), giving per sample U (C, rank), V (C, rank)
  and H head gates.
- Query projection W_q(b) = W0 + U(b)·V(b)ᵀ (C, E) with a shared bias b_q;
  E = C = ``dim``.
- Output projection: the shared W_o (E, C) with each head's rows scaled by its
  gate 2·sigmoid(g_h(b)), folded into a per-sample (B, E, C) w_o so that the
  fused op runs unchanged; shared bias b_o.
- Keys and values: Linear(prompt_dim, E) maps of the normalised prompts; absent
  prompts are masked out, and a sample with no prompt gets attention output 0
  (y = x + b_o).
- An optional additive attention-logit bias per token and prompt (``attn_bias``, e.g. the log of each
  organ's occupancy at each token, times a per-head ``attn_bias_scale``), passed to the fused op as
  given: a head-shared bias is never expanded over the heads.
- Initialisation: the hypernetwork's last layer has zero weights, U's bias is
  random and V's and the gates' are zero, so at initialisation W_q(b) = W0, all
  gates are 1 (a plain cross-attention), and V(b) gets gradients from the start.
"""

from __future__ import annotations

import torch
from torch import nn

from anatokernels import _checks, _dispatch
from anatokernels.hyper_attention import OP, hyper_cross_attention
from anatokernels.nn._config import register_config, reset_config

__all__ = ["HyperCrossAttention"]

_CONFIG = "attention_config"  # buffer (num_heads, rank), checked on load_state_dict


def _cast(t: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    return t if t is None or not t.is_floating_point() else t.to(dtype)


def _describe(values) -> str:
    return f"num_heads={values[0]}, rank={values[1]}"


class HyperCrossAttention(nn.Module):
    """Hypernet-controlled cross-attention block (see the module docstring for the design).

    dim: C, the image channels (also the attention width E).
    prompt_dim: width of the prompt tokens.
    num_heads: H, dividing ``dim``. rank: rank of the per-sample update of W_q.
    hyper_hidden: hidden width of the hypernetwork MLP.
    backend: passed to :func:`anatokernels.hyper_cross_attention`; any backend name of the library is
        accepted: one the op lacks (``"cpu"``, ``"cuda"``: it has no C++ kernel) means ``"auto"`` for it,
        which on CPU tensors is the ``chunked`` PyTorch path.
    device, dtype: factory kwargs of the parameters (``device="meta"``, then ``to_empty`` and
        :meth:`reset_parameters`, builds it without allocating twice).
    ``num_heads`` and ``rank`` are saved in the state dict (buffer ``attention_config``): loading
    weights saved with others raises a ValueError.
    """

    def __init__(self, dim: int, prompt_dim: int, num_heads: int = 4, rank: int = 8, hyper_hidden: int = 128,
                 *, backend: str = "auto", device=None, dtype=None):
        super().__init__()
        for name, value in (("dim", dim), ("prompt_dim", prompt_dim), ("num_heads", num_heads), ("rank", rank),
                            ("hyper_hidden", hyper_hidden)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"HyperCrossAttention: {name} must be a positive int, got {value!r}")
        if dim % num_heads:
            raise ValueError(f"HyperCrossAttention: dim={dim} is not divisible by num_heads={num_heads}")
        factory = dict(device=device, dtype=dtype)
        self.dim, self.prompt_dim, self.num_heads, self.rank = dim, prompt_dim, num_heads, rank
        self.backend = backend
        self._op_backend = _dispatch.prepare("HyperCrossAttention", backend, (OP,))[OP]
        self.norm = nn.LayerNorm(dim, **factory)
        self.prompt_norm = nn.LayerNorm(prompt_dim, **factory)
        self.to_k = nn.Linear(prompt_dim, dim, **factory)
        self.to_v = nn.Linear(prompt_dim, dim, **factory)
        self.w_q = nn.Parameter(torch.empty(dim, dim, **factory))  # W0 (C, E)
        self.b_q = nn.Parameter(torch.empty(dim, **factory))
        self.w_o = nn.Parameter(torch.empty(dim, dim, **factory))  # (E, C)
        self.b_o = nn.Parameter(torch.empty(dim, **factory))
        self._reset_projections()
        self.hyper = nn.Sequential(nn.Linear(dim + prompt_dim, hyper_hidden, **factory), nn.GELU(),
                                   nn.Linear(hyper_hidden, 2 * dim * rank + num_heads, **factory))
        self._reset_hyper_output()
        register_config(self, _CONFIG, (num_heads, rank), _describe, device=device)

    @torch.no_grad()
    def _reset_projections(self) -> None:
        self.w_q.normal_(0.0, self.dim ** -0.5)
        self.b_q.zero_()
        self.w_o.normal_(0.0, self.dim ** -0.5)
        self.b_o.zero_()

    @torch.no_grad()
    def _reset_hyper_output(self) -> None:
        """Zero weights, U's bias random and V's and the gates' zero: W_q(b) = W0 and gates 1 at first."""
        last = self.hyper[-1]
        last.weight.zero_()
        last.bias.zero_()
        last.bias[:self.dim * self.rank].normal_(0.0, self.dim ** -0.5)

    def reset_parameters(self) -> None:
        """Initialise every parameter as at construction (and the config buffer): after ``to_empty``."""
        for layer in (self.norm, self.prompt_norm, self.to_k, self.to_v, self.hyper[0], self.hyper[-1]):
            layer.reset_parameters()
        self._reset_projections()
        self._reset_hyper_output()
        reset_config(self, _CONFIG, (self.num_heads, self.rank))

    def forward(self, x: torch.Tensor, prompts: torch.Tensor, *, key_padding_mask: torch.Tensor | None = None,
                attn_bias: torch.Tensor | None = None, attn_bias_scale: torch.Tensor | None = None,
                prompt_mask: None = None) -> torch.Tensor:
        """x: (B, C, Z, Y, X) image features or (B, L, C) tokens; prompts: (B, M, prompt_dim);
        key_padding_mask: (B, M) bool, True = ignore that prompt (absent), as in ``nn.MultiheadAttention``
        (None: all present). ``prompt_mask`` (True = present) was removed: passing it raises a TypeError.
        attn_bias: additive attention-logit bias (B, H, L, M), or (B, 1, L, M) / (B, L, M) shared by the
        heads, L = Z·Y·X in the order of ``x.flatten(2)`` (e.g. log(occupancy + ε) of each organ at each
        token); attn_bias_scale: (H,) per-head factor of it (e.g. a learned parameter of the caller).
        Both are cast to the attention's dtype; see :func:`anatokernels.hyper_cross_attention`.
        Returns x's shape and dtype."""
        _checks.removed_keep_mask("HyperCrossAttention", "prompt_mask", "key_padding_mask", prompt_mask)
        self._check(x, prompts, key_padding_mask)
        volume = x.dim() == 5
        tokens = x.flatten(2).transpose(1, 2) if volume else x  # (B, L, C)
        b, c, h = x.shape[0], self.dim, self.num_heads
        normed = self.norm(tokens)
        p = self.prompt_norm(prompts)
        weight = (torch.ones(prompts.shape[:2], dtype=p.dtype, device=x.device) if key_padding_mask is None
                  else (~key_padding_mask).to(p.dtype))[..., None]
        prompt_mean = (p * weight).sum(dim=1) / weight.sum(dim=1).clamp_min(1.0)
        z = self.hyper(torch.cat([normed.mean(dim=1), prompt_mean], dim=-1))
        u, v_low, gates = z.split([c * self.rank, c * self.rank, h], dim=-1)
        w_q = self.w_q + u.reshape(b, c, self.rank) @ v_low.reshape(b, c, self.rank).transpose(1, 2)
        head_gate = (2 * torch.sigmoid(gates)).repeat_interleave(c // h, dim=1)  # (B, E)
        w_o = head_gate[:, :, None] * self.w_o  # (B, E, C)
        dtype = normed.dtype
        out = hyper_cross_attention(normed, self.to_k(p).to(dtype), self.to_v(p).to(dtype), w_q.to(dtype),
                                    w_o.to(dtype), b_q=self.b_q.to(dtype).expand(b, c), b_o=self.b_o.to(dtype),
                                    key_ignore_mask=key_padding_mask, num_heads=h, backend=self._op_backend,
                                    attn_bias=_cast(attn_bias, dtype), attn_bias_scale=_cast(attn_bias_scale, dtype))
        y = tokens + out.to(tokens.dtype)
        return y.transpose(1, 2).reshape(x.shape) if volume else y

    def _check(self, x: torch.Tensor, prompts: torch.Tensor, mask: torch.Tensor | None) -> None:
        if x.dim() not in (3, 5) or x.shape[1 if x.dim() == 5 else 2] != self.dim:
            raise ValueError(f"HyperCrossAttention: x must be (B, {self.dim}, Z, Y, X) or (B, L, {self.dim}), "
                             f"got {tuple(x.shape)}")
        if prompts.dim() != 3 or prompts.shape[0] != x.shape[0] or prompts.shape[2] != self.prompt_dim:
            raise ValueError(f"HyperCrossAttention: prompts must be (B, M, {self.prompt_dim}) with B={x.shape[0]}, "
                             f"got {tuple(prompts.shape)}")
        if mask is not None and (not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool
                                 or mask.shape != prompts.shape[:2]):
            raise ValueError(f"HyperCrossAttention: key_padding_mask must be a bool (B, M) = "
                             f"{tuple(prompts.shape[:2])} tensor or None, got "
                             f"{getattr(mask, 'dtype', type(mask).__name__)} {tuple(getattr(mask, 'shape', ()))}")
