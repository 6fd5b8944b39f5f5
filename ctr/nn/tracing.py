"""Whether a module's forward is being captured (TorchScript tracing, ``torch.export``, ``torch.compile``).

The blocks with a hand-written backward (:mod:`ctr.nn.cin`, :mod:`ctr.nn.interaction`) compute in Python
``autograd.Function`` code with in-place writes into views, which the capturing front ends cannot record; while
capturing they run the same function as plain tensor operations instead (tests hold the two equal).
"""

from __future__ import annotations

import torch


def capturing() -> bool:
    return torch.jit.is_tracing() or torch.compiler.is_compiling()
