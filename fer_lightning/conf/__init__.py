"""The Hydra configs (train.yaml, eval.yaml, preview.yaml and their groups), shipped inside the package.

They live here so that a pip-installed ``fer-train`` / ``fer-evaluate`` composes the same configs as
``python train.py`` in a clone, where ``conf/`` at the top is a link to this folder: one copy of every YAML.
Add a folder of your own configs with ``hydra.searchpath=[file:///path/to/conf]``.
"""

from pathlib import Path

CONF_DIR = Path(__file__).resolve().parent
