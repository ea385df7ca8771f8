"""Hydra sweeper that drives Optuna >= 3 by ask-and-tell: ``hydra/sweeper=fer_optuna`` (see docs/sweeps.md).

``hydra_plugins`` is a namespace package: Hydra imports every module under it to find plugins, and
``config.py`` registers the sweeper's config schema in Hydra's ConfigStore when imported.
"""
