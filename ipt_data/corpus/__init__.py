"""Corpora in and out: reading inputs, mixing, the published corpus's statistics, figures and card."""
