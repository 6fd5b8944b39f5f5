"""AutoInt's multi-head self-attention interacting layers (Song et al., CIKM 2019), with the ``attention`` stage norm.

Shape letters: A = attention width of a layer (all heads), heads split it into A / heads per head.

The layer follows the official code (``featureRec/autoint/model.py``, ``multihead_attention``): Q, K, V and the
residual are Linear projections (each followed by ReLU when ``projection_relu``), scaled dot-product softmax per
head, attention dropout, heads concatenated, residual added, then ReLU. The paper's equations have no ReLU on the
projections and no norm; the code adds a LayerNorm after the ReLU. Norm positions (``norm.attention``'s ``position``):

* ``post`` (the official code, Post-LN): ``y = Norm(ReLU(MHA(x) + Res(x)))``.
* ``pre`` (Xiong et al. 2020, Pre-LN): ``y = ReLU(MHA(Norm(x)) + Res(x))`` and one final ``Norm`` after the
  last layer; the residual path never passes through a norm.

With ``norm = none`` both positions compute the same function. ``wn`` weight-normalises every projection instead.
AutoInt's ``pre`` layer has no identity path (its residual is a projection inside the ReLU);
:class:`TransformerLayer` is the standard layer with identity residuals in Xiong et al.'s Pre-LN and Post-LN
layouts, for the question their analysis asks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ctr.errors import ConfigError
from ctr.nn.norm import NormSpec, parse_norm


def attention(q: Tensor, k: Tensor, v: Tensor, dropout: float) -> Tensor:
    """Scaled dot-product attention, 3 x (B, heads, F, d) -> (B, heads, F, d), in float32 under CPU autocast.

    On CPU the attention kernel's reduced-precision backward is many times slower than its float32 one at these
    shapes (tens of fields), while its products are a small share of the model's; so under CPU autocast it runs in
    float32 and returns the autocast dtype, and the projections around it keep running in bf16.
    """
    if q.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        with torch.autocast("cpu", enabled=False):
            out = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), dropout_p=dropout)
        return out.to(torch.get_autocast_dtype("cpu"))
    return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)


class InteractingLayer(nn.Module):
    """One interacting layer: multi-head self-attention over fields with a projected residual.

    Args:
        num_fields: F.
        in_dim: width of each field's input vector.
        out_dim: A, width of each field's output (all heads).
        heads: number of heads; must divide ``out_dim``.
        norm: the ``attention`` stage norm and its position (``post`` or ``pre``, see the module docstring); shape
            (F, in_dim) for ``pre``, (F, out_dim) for ``post``.
        projection_relu: ReLU after the Q, K, V and residual projections (official code).
        residual: add the projected residual ``Res(x)``.
        dropout: dropout on the attention weights.
    """

    def __init__(
        self,
        num_fields: int,
        in_dim: int,
        out_dim: int,
        heads: int = 2,
        norm: NormSpec | str = "none",
        projection_relu: bool = True,
        residual: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if out_dim % heads:
            raise ConfigError(f"attention width {out_dim} is not divisible by {heads} heads")
        spec = parse_norm(norm, "attention")
        position = spec.position
        self.heads, self.position, self.dropout = heads, position, dropout
        self.projection_relu = projection_relu
        norm_shape = (num_fields, in_dim if position == "pre" else out_dim)
        # Q, K, V in one Linear; wn normalises each output unit's row, the same as three separate wn Linears
        self.qkv, self.norm = spec.apply(nn.Linear(in_dim, 3 * out_dim), norm_shape)
        self.res = spec.reparametrize(nn.Linear(in_dim, out_dim)) if residual else None

    def _project(self, layer: nn.Module, x: Tensor) -> Tensor:
        y = layer(x)
        return F.relu(y) if self.projection_relu else y

    def forward(self, x: Tensor) -> Tensor:
        """(B, F, in_dim) -> (B, F, out_dim)."""
        b, f, _ = x.shape
        h = self.norm(x) if self.position == "pre" else x
        q, k, v = (
            self._project(self.qkv, h).view(b, f, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        )  # 3 x (B, heads, F, A/heads)
        att = attention(q, k, v, self.dropout if self.training else 0.0)  # (B, heads, F, A/heads)
        y = att.transpose(1, 2).reshape(b, f, -1)  # (B, F, A)
        if self.res is not None:
            y = y + self._project(self.res, x)
        y = F.relu(y)
        return self.norm(y) if self.position == "post" else y


class SelfAttentionStack(nn.Module):
    """AutoInt's stack of interacting layers, plus the final norm of the ``pre`` position.

    Args:
        num_fields: F.
        in_dim: D, the embedding width.
        layer_dims: A of each layer.
        heads, projection_relu, residual, dropout: per layer, see :class:`InteractingLayer`.
        norm: the ``attention`` stage norm and its position, ``post`` or ``pre``.
    """

    def __init__(
        self,
        num_fields: int,
        in_dim: int,
        layer_dims: list[int],
        heads: int = 2,
        norm: NormSpec | str = "none",
        projection_relu: bool = True,
        residual: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        spec = parse_norm(norm, "attention")
        self.layers = nn.ModuleList()
        width = in_dim
        for a in layer_dims:
            self.layers.append(InteractingLayer(num_fields, width, a, heads, spec, projection_relu, residual, dropout))
            width = a
        pre = spec.position == "pre" and not spec.reparametrizes and layer_dims
        self.final_norm = spec.build((num_fields, width)) if pre else nn.Identity()
        self.out_dim = width

    def forward(self, e: Tensor) -> Tensor:
        """(B, F, D) -> (B, F, A_last)."""
        for layer in self.layers:
            e = layer(e)
        return self.final_norm(e)


class TransformerLayer(nn.Module):
    """A Transformer encoder layer over fields with identity residuals, in Xiong et al.'s two layouts (Xiong et al.
    2020, "On Layer Normalization in the Transformer Architecture", arXiv 2002.04745, section 3):

    * ``post`` (Post-LN): ``x = Norm(x + MHA(x)); x = Norm(x + FFN(x))``;
    * ``pre`` (Pre-LN): ``x = x + MHA(Norm(x)); x = x + FFN(Norm(x))`` (the stack adds one final ``Norm``).

    ``MHA`` is standard multi-head self-attention (Q, K, V and output projections, no ReLU), ``FFN(x) =
    W2 ReLU(W1 x + b1) + b2``. Unlike AutoInt's layer, the residual is the identity, which Xiong et al.'s
    gradient analysis rests on, so the width A is the same in and out. Linear weights start Xavier-uniform and
    biases at 0 (the initialisation of that analysis). ``wn`` weight-normalises every Linear instead of a norm.

    Args:
        num_fields: F.
        width: A, the residual stream's width.
        heads: number of heads; must divide A.
        ffn_dim: FFN hidden width.
        norm: the ``attention`` stage norm and its position; shape (F, A).
        dropout: dropout on the attention weights.
    """

    def __init__(
        self, num_fields: int, width: int, heads: int, ffn_dim: int, norm: NormSpec | str = "none", dropout: float = 0.0
    ) -> None:
        super().__init__()
        if width % heads:
            raise ConfigError(f"attention width {width} is not divisible by {heads} heads")
        spec = parse_norm(norm, "attention")
        self.heads, self.position, self.dropout = heads, spec.position, dropout
        linears = [
            nn.Linear(width, 3 * width),
            nn.Linear(width, width),
            nn.Linear(width, ffn_dim),
            nn.Linear(ffn_dim, width),
        ]
        for layer in linears:
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.qkv, self.out, self.ffn1, self.ffn2 = (spec.reparametrize(layer) for layer in linears)
        self.norm1, self.norm2 = (
            nn.Identity() if spec.reparametrizes else spec.build((num_fields, width)) for _ in range(2)
        )

    def attend(self, x: Tensor) -> Tensor:
        """MHA(x): (B, F, A) -> (B, F, A)."""
        b, f, _ = x.shape
        q, k, v = self.qkv(x).view(b, f, 3, self.heads, -1).permute(2, 0, 3, 1, 4)  # 3 x (B, heads, F, A/heads)
        att = attention(q, k, v, self.dropout if self.training else 0.0)
        return self.out(att.transpose(1, 2).reshape(b, f, -1))  # (B, F, A)

    def feed_forward(self, x: Tensor) -> Tensor:
        """FFN(x): (B, F, A) -> (B, F, A)."""
        return self.ffn2(F.relu(self.ffn1(x)))

    def forward(self, x: Tensor) -> Tensor:
        """(B, F, A) -> (B, F, A)."""
        if self.position == "pre":
            x = x + self.attend(self.norm1(x))
            return x + self.feed_forward(self.norm2(x))
        x = self.norm1(x + self.attend(x))
        return self.norm2(x + self.feed_forward(x))


class TransformerStack(nn.Module):
    """Transformer layers (:class:`TransformerLayer`) over the field embeddings, plus the final norm of ``pre``.

    Args:
        num_fields: F.
        in_dim: D, the embedding width; a bias-free Linear projects D to A when they differ.
        width: A.
        layers: number of layers.
        heads, ffn_dim, dropout: per layer.
        norm: the ``attention`` stage norm and its position, ``post`` or ``pre``.
    """

    def __init__(
        self,
        num_fields: int,
        in_dim: int,
        width: int,
        layers: int,
        heads: int = 2,
        ffn_dim: int = 64,
        norm: NormSpec | str = "none",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        spec = parse_norm(norm, "attention")
        self.project = spec.reparametrize(nn.Linear(in_dim, width, bias=False)) if in_dim != width else nn.Identity()
        self.layers = nn.ModuleList(
            TransformerLayer(num_fields, width, heads, ffn_dim, spec, dropout) for _ in range(layers)
        )
        pre = spec.position == "pre" and not spec.reparametrizes and layers
        self.final_norm = spec.build((num_fields, width)) if pre else nn.Identity()
        self.out_dim = width

    def forward(self, e: Tensor) -> Tensor:
        """(B, F, D) -> (B, F, A)."""
        x = self.project(e)
        for layer in self.layers:
            x = layer(x)
        return self.final_norm(x)
