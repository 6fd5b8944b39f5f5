"""A multi-layer perceptron whose norm and its position are chosen by spec."""

from __future__ import annotations

from torch import Tensor, nn

from ctr.nn.norm import NormSpec, parse_norm
from ctr.registry import Registry

ACTIVATIONS: Registry[type[nn.Module]] = Registry("activation")
for _name, _cls in {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "prelu": nn.PReLU,
    "identity": nn.Identity,
}.items():
    ACTIVATIONS.register(_name)(_cls)


class MLP(nn.Module):
    """Stack of ``Linear -> Norm -> act -> Dropout`` (``pre_act``) or ``Linear -> act -> Norm -> Dropout`` (``post_act``).

    Args:
        in_dim: input width.
        hidden: widths H of the hidden layers (may be empty).
        norm: norm of every hidden layer and its position, ``pre_act`` (the BatchNorm convention) or ``post_act``
            (``wn`` re-parametrises each hidden Linear instead).
        dropout: dropout probability after each activation.
        activation: registered activation name.
        out_dim: if set, a final plain Linear to this width (no norm, no activation).
    """

    def __init__(
        self,
        in_dim: int,
        hidden: list[int],
        norm: NormSpec | str = "none",
        dropout: float = 0.0,
        activation: str = "relu",
        out_dim: int | None = None,
    ) -> None:
        super().__init__()
        spec = parse_norm(norm, "mlp")
        layers: list[nn.Module] = []
        width = in_dim
        for h in hidden:
            linear, norm_layer = spec.apply(nn.Linear(width, h), h)
            act = ACTIVATIONS.get(activation)()
            block = [linear, norm_layer, act] if spec.position == "pre_act" else [linear, act, norm_layer]
            layers += [m for m in block if not isinstance(m, nn.Identity) or m is act]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        if out_dim is not None:
            layers.append(nn.Linear(width, out_dim))
            width = out_dim
        self.net = nn.Sequential(*layers)
        self.out_dim = width

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_dim) -> (B, out_dim or hidden[-1])."""
        return self.net(x)
