"""Run-directory files, written atomically (temp file + rename) so a failed run never corrupts a previous one."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ctr.errors import CTRError

CONFIG, SCHEMA, MODEL, METRICS, RESULTS = "config.yaml", "schema.json", "model.pt", "metrics.jsonl", "results.json"
DIVERGED, TENSORBOARD = "diverged.json", "tensorboard"


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` then rename the temp file over ``path``.

    Raises:
        CTRError: the write failed (a full disk, a file-size limit, an I/O error), naming ``path``; the temp file
            is removed and a previous ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # torch.save reports a failed write as a RuntimeError
        Path(tmp).unlink(missing_ok=True)
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e).splitlines()[0][:200]
        raise CTRError(f"{path}: could not be written ({reason}); any previous {path.name} is unchanged") from e
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=1) + "\n"))


def save_state(path: str | Path, state: dict[str, torch.Tensor]) -> None:
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    try:
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")
    except OSError as e:
        raise CTRError(f"{path}: could not be appended to ({e.strerror or e})") from e
