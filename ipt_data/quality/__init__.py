"""Pair quality and benchmark decontamination: pure building blocks the stages use."""
