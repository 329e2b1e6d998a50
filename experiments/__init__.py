"""Experiments on top of the training methods: one run, many runs, their records, statistics, plots and videos.

``experiments.runner`` turns settings into a run directory (the engine of ``train.py train``), ``experiments.compare``
runs methods over seeds and summarises them (``train.py compare``), ``experiments.run_log`` writes a run's record
through SB3's logger (CSV, TensorBoard, stdout), ``experiments.locks`` keeps one writer per directory,
``experiments.stats`` and ``experiments.plots`` hold the statistics and figures, ``experiments.video`` records
episodes, and ``experiments.gradient_study`` measures the bias and variance of the gradient estimators against exact
gradients (``docs/estimators.md``).

Dependencies point one way: ``gumbel_rl`` <- ``envs`` <- ``agents`` <- ``experiments`` <- ``train.py`` / ``bench/``.
"""
