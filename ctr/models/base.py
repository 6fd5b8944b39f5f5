"""The model base class: declared stages, per-model options, construction from a config. Nothing else."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from torch import Tensor, nn

from ctr.config import STAGES, ModelConfig, NormConfig, check_fields
from ctr.errors import ConfigError
from ctr.nn.embedding import FieldEmbedding
from ctr.nn.norm import NormSpec, parse_norm
from ctr.registry import Registry
from ctr.types import Batch, Schema

MODELS: Registry[type[CTRModel]] = Registry("model")
OptionsT = TypeVar("OptionsT")


def register_model(name: str):
    """Class decorator: register a CTRModel subclass under ``name`` (also its ``name`` attribute)."""

    def deco(cls: type[CTRModel]) -> type[CTRModel]:
        cls.name = name
        return MODELS.register(name)(cls)

    return deco


@dataclass
class NoOptions:
    """Models without options beyond ``name`` and ``embed_dim`` (and without embeddings)."""


@dataclass
class EmbeddingOptions:
    """Options of every model with field embeddings."""

    embed_init_std: float  # std of the embedding init; embedding-stage norm gains start at it too


@dataclass
class MLPOptions(EmbeddingOptions):
    """Options shared by models with a deep (MLP) part."""

    hidden: list[int]
    dropout: float
    activation: str


@dataclass(frozen=True)
class ModelSpec(Generic[OptionsT]):
    """Everything a model is built from besides the data schema, validated.

    Attributes:
        name: the registered model name.
        embed_dim: D.
        options: the model's ``Options`` dataclass (its config keys besides ``name`` and ``embed_dim``).
        norms: the :class:`NormSpec` of every stage the model declares (position included).
    """

    name: str
    embed_dim: int
    options: OptionsT
    norms: dict[str, NormSpec]


def field_embedding(schema: Schema, spec: ModelSpec[EmbeddingOptions]) -> FieldEmbedding:
    """The field embedding of a model: its ``numeric`` and ``categorical`` norm stages, ``options.embed_init_std``."""
    return FieldEmbedding(
        schema, spec.embed_dim, spec.norms["numeric"], spec.norms["categorical"], init_std=spec.options.embed_init_std
    )


class CTRModel(nn.Module):
    """A CTR model maps a :class:`Batch` to logits of shape (B,). No sigmoid, no loss, no optimizer, no device.

    Subclasses set ``stages`` (the norm stages they have, a subset of ``ctr.config.STAGES``) and ``Options`` (a
    dataclass of their hyperparameters; the config's ``model:`` keys besides ``name``/``embed_dim``), and are built
    as ``Model(schema, spec)``.
    """

    stages: ClassVar[tuple[str, ...]] = ()
    Options: ClassVar[type] = NoOptions
    name: ClassVar[str] = ""

    def __init__(self, schema: Schema, spec: ModelSpec[Any]) -> None:
        super().__init__()

    def forward(self, batch: Batch) -> Tensor:  # pragma: no cover - abstract
        """Returns (B,) logits."""
        raise NotImplementedError


def model_spec(model: ModelConfig, norm: NormConfig) -> ModelSpec[Any]:
    """Validate a config's model options and stage norms against the registered model.

    Raises:
        ConfigError: unknown model, unknown or missing option, an invalid norm, or a non-``none`` norm on a stage
            the model does not have (naming the key).
    """
    cls = MODELS.get(model.name)
    options = cls.Options(**check_fields(cls.Options, model.options, "model.", complete=True))
    norms = {}
    for stage in STAGES:
        spec = parse_norm(getattr(norm, stage), stage)
        if stage in cls.stages:
            norms[stage] = spec
        elif not spec.is_none:
            have = ", ".join(cls.stages) or "no norm stages"
            raise ConfigError(f"norm.{stage}={spec.name}: model '{cls.name}' has no '{stage}' stage (it has: {have})")
    return ModelSpec(model.name, model.embed_dim, options, norms)


def build_model(schema: Schema, model: ModelConfig, norm: NormConfig) -> CTRModel:
    """Look up ``model.name`` in the registry and build it for ``schema``."""
    spec = model_spec(model, norm)
    return MODELS.get(spec.name)(schema, spec)
