"""Shared building blocks. Shape letters: B batch, F = Fn + Fc fields, D embedding dim, H hidden width."""
