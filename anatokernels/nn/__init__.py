"""Thin ``nn.Module`` wrappers over the anatokernels ops."""

__all__: list[str] = []
