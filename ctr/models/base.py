"""The model base class: declared stages, per-model options, construction from a config. Nothing else."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from torch import Tensor, nn

from ctr.config import STAGES, ModelConfig, NormConfig
from ctr.types import Batch, Schema
from ctr.errors import ConfigError
from ctr.nn.embedding import EMBED_STD, FieldEmbedding
from ctr.nn.norm import NormSpec, parse_norm
from ctr.registry import Registry

MODELS: Registry[type["CTRModel"]] = Registry("model")


def register_model(name: str):
    """Class decorator: register a CTRModel subclass under ``name`` (also its ``name`` attribute)."""

    def deco(cls: type["CTRModel"]) -> type["CTRModel"]:
        cls.name = name
        return MODELS.register(name)(cls)

    return deco

EMBEDDING_STAGES = ("numeric", "categorical")


@dataclass
class NoOptions:
    """Models without options beyond ``name`` and ``embed_dim`` (and without embeddings)."""


@dataclass
class EmbeddingOptions:
    """Options of every model with field embeddings."""

    embed_init_std: float = EMBED_STD  # std of the embedding init; embedding-stage norm gains start at it too


def field_embedding(schema: Schema, embed_dim: int, norms: dict[str, NormSpec], options: EmbeddingOptions) -> FieldEmbedding:
    """The field embedding of a model: its ``numeric`` and ``categorical`` norm stages, ``options.embed_init_std``."""
    return FieldEmbedding(schema, embed_dim, norms["numeric"], norms["categorical"], init_std=options.embed_init_std)


@dataclass
class MLPOptions(EmbeddingOptions):
    """Options shared by models with a deep (MLP) part."""

    hidden: list[int] = field(default_factory=lambda: [400, 400, 400])
    dropout: float = 0.0
    activation: str = "relu"


class CTRModel(nn.Module):
    """A CTR model maps a :class:`Batch` to logits of shape (B,). No sigmoid, no loss, no optimizer, no device.

    Subclasses set ``stages`` (the norm stages they have, a subset of ``ctr.config.STAGES``) and ``Options`` (a
    dataclass of their hyperparameters; the config's ``model:`` keys besides ``name``/``embed_dim``).
    """

    stages: ClassVar[tuple[str, ...]] = ()
    Options: ClassVar[type] = NoOptions
    name: ClassVar[str] = ""

    def __init__(self, schema: Schema, embed_dim: int, options: object, norms: dict[str, NormSpec], norm_cfg: NormConfig) -> None:
        super().__init__()

    @classmethod
    def check_norms(cls, norm_cfg: NormConfig) -> dict[str, NormSpec]:
        """Parse the norm of every declared stage; a non-``none`` norm on an undeclared stage is an error."""
        specs = {}
        for stage in STAGES:
            spec = parse_norm(getattr(norm_cfg, stage), f"norm.{stage}", stage in EMBEDDING_STAGES)
            if stage in cls.stages:
                specs[stage] = spec
            elif not spec.is_none:
                have = ", ".join(cls.stages) or "no norm stages"
                raise ConfigError(f"norm.{stage}={spec.name}: model '{cls.name}' has no '{stage}' stage (it has: {have})")
        return specs

    @classmethod
    def from_config(cls, schema: Schema, model: ModelConfig, norm: NormConfig) -> "CTRModel":
        options = cls.Options(**model.options)
        return cls(schema, model.embed_dim, options, cls.check_norms(norm), norm)

    def forward(self, batch: Batch) -> Tensor:  # pragma: no cover - abstract
        """Returns (B,) logits."""
        raise NotImplementedError


def build_model(schema: Schema, model: ModelConfig, norm: NormConfig) -> CTRModel:
    """Look up ``model.name`` in the registry and build it for ``schema``."""
    return MODELS.get(model.name).from_config(schema, model, norm)
