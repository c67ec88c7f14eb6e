"""Projectors: speech-encoder outputs -> backbone embeddings.

| projector | maps | mirrors |
|---|---|---|
| `ResamplerProjector` | LayerNorm, Linear, GELU, Linear (no biases) | `model.audio_projection` |
| `LinearProjector` | one Linear | a plain adapter |
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from jaxtyping import Float
from torch import Tensor, nn

__all__ = ["LinearProjector", "Projector", "ResamplerProjector"]


class Projector(nn.Module, ABC):
    """Encoder outputs `(..., input_size)` -> embeddings `(..., hidden_size)`.

    Attributes:
        input_size: the encoder's output width.
        hidden_size: the backbone's embedding width.
    """

    input_size: int
    hidden_size: int

    @abstractmethod
    def project(self, x: Float[Tensor, "*batch input"]) -> Float[Tensor, "*batch hidden"]:
        """The projection (the input width already checked)."""

    def forward(self, x: Float[Tensor, "*batch input"]) -> Float[Tensor, "*batch hidden"]:
        """Project `x`.

        Raises:
            ValueError: features of another width than `input_size`.
        """
        if x.shape[-1] != self.input_size:
            raise ValueError(
                f"{type(self).__name__} takes features of width {self.input_size}; got "
                f"{x.shape[-1]} (shape {tuple(x.shape)}): is it the encoder it was built for?"
            )
        return self.project(x)


class ResamplerProjector(Projector):
    """Omni-Diffusion's `ResamplerProjector(512, hidden_size)`, with its parameter names.

    `pre_proj_layernorm` (LayerNorm), then `mlp`: `Linear(input, hidden, bias=False)`,
    GELU, `Linear(hidden, hidden, bias=False)`; weights initialised as upstream (normal, std
    0.02). A checkpoint's `model.audio_projection.*` loads into it unchanged.

    Args:
        input_size: the encoder's output width (SenseVoiceSmall: 512).
        hidden_size: the backbone's width (Dream-7B: 3,584).
    """

    def __init__(self, input_size: int = 512, hidden_size: int = 3584) -> None:
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.pre_proj_layernorm = nn.LayerNorm(input_size)
        self.mlp = nn.Sequential(
            nn.Linear(input_size, hidden_size, bias=False),
            nn.GELU(),
            nn.Linear(hidden_size, hidden_size, bias=False),
        )
        for module in self.mlp:
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def project(self, x: Float[Tensor, "*batch input"]) -> Float[Tensor, "*batch hidden"]:
        out: Tensor = self.mlp(self.pre_proj_layernorm(x))
        return out


class LinearProjector(Projector):
    """One linear map (with bias).

    Args:
        input_size: the encoder's output width.
        hidden_size: the backbone's width.
    """

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.linear = nn.Linear(input_size, hidden_size)

    def project(self, x: Float[Tensor, "*batch input"]) -> Float[Tensor, "*batch hidden"]:
        out: Tensor = self.linear(x)
        return out
