"""Norm-placement ablations: grid expansion (``grid``), runs (``runner``), statistics (``stats``), report (``report``).

Entry point: ``python -m ctr.ablation CONFIG [--out DIR] [--workers N] [--data PATH]``.
"""
