"""Feature-interaction layers over field embeddings (B, F, D)."""
from __future__ import annotations

from torch import Tensor, nn


class FM(nn.Module):
    """Factorization-machine pairwise term (Rendle 2010): ``sum_{i<j} <e_i, e_j>`` in O(F D).

    Uses ``0.5 * sum_d((sum_i e_id)^2 - sum_i e_id^2)``.
    """

    def forward(self, e: Tensor) -> Tensor:
        """(B, F, D) -> (B,)."""
        square_of_sum = e.sum(dim=1).pow(2)  # (B, D)
        sum_of_square = e.pow(2).sum(dim=1)  # (B, D)
        return 0.5 * (square_of_sum - sum_of_square).sum(dim=1)  # (B,)
