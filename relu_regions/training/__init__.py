"""Fitting nets to targets: the two-phase trainer (phase 1 on derived parameters, release,
phase 2 on raw weights), baselines, growth, resume (``trainer``)."""
