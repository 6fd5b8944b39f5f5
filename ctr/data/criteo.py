"""The raw Criteo format and a streaming reader for it.

A raw Criteo file (Kaggle ``train.txt``, Criteo 1TB ``day_N``) has no header; each line is
``label \\t I1 .. I13 \\t C1 .. C26``: a 0/1 click label, 13 integer counts and 26 categorical values (32-bit
hashes written as 8 hex characters). An empty cell is a missing value. Files may be gzip-compressed (``.gz``).
"""
from __future__ import annotations

NUM_INT = 13
NUM_CAT = 26
NUM_COLUMNS = 1 + NUM_INT + NUM_CAT
LABEL = "label"
INT_COLUMNS = [f"I{i}" for i in range(1, NUM_INT + 1)]
CAT_COLUMNS = [f"C{i}" for i in range(1, NUM_CAT + 1)]
COLUMNS = [LABEL, *INT_COLUMNS, *CAT_COLUMNS]
