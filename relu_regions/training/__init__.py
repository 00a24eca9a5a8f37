"""Fitting nets to targets, one concern per module (docs/architecture.md):

- ``config``: :class:`FitConfig` (every setting and its default, torch-free) and :class:`Phase`;
  ``auto``: the depth-dependent defaults of settings left unset
- ``data``: the Dataset a config trains on (target, arrays, interval, held-out share)
- ``functional``: the batched functional MLP over a flat Theta (N, P)
- ``jacobians``: per-point, per-run and forward-mode Jacobians; ``coordinates``: GmP coordinates
- ``optim``: Levenberg-Marquardt and Adam as optimizer objects
- ``stages``: named stages, the resume journal, reading a training state, stage hooks
- ``growth``: inserting construction layers; ``fitting``: :func:`fit` itself
- ``result``: :class:`FitResult` and :func:`load_run`; ``run_folder``: the folder ``save``
  writes and reads; ``progress``: progress lines
"""
