"""The model zoo: one model per file, registered by name (file name == registry name == configs/models/<name>.yaml)."""

from __future__ import annotations

import importlib
import pkgutil

from ctr.models.base import MODELS, CTRModel, build_model, register_model

for _m in pkgutil.iter_modules(__path__):
    if _m.name != "base":
        importlib.import_module(f"{__name__}.{_m.name}")


def get_model(name: str) -> type[CTRModel]:
    return MODELS.get(name)


def list_models() -> list[str]:
    return MODELS.names()


__all__ = ["CTRModel", "build_model", "get_model", "list_models", "register_model"]
