"""The report's Table 1 in one call: skip configurations pretrained to convergence,
timed, and probed (``ecgfast ablation`` on the command line).

- :class:`AblationConfig` / :func:`resolve`: the options (defaults: the report's
  protocol), presets and the TOML file (:mod:`.config`).
- :func:`run_ablation`: every cell (configuration x attention x seed), resumable
  (:mod:`.runner`).
- what each pretraining run sees (:mod:`.scope`), the cells (:mod:`.cells`) and the cost
  estimate (:mod:`.cost`).
- :func:`write_report`: table1.md / .csv / .json / .png with the baselines, mean ± sd over
  seeds x folds and paired differences with their intervals (:mod:`.report`, :mod:`.plot`).
"""

from ecgfast.ablation.config import PRESETS, AblationConfig, read_toml, resolve
from ecgfast.ablation.report import write_report
from ecgfast.ablation.runner import cells_of, run_ablation

__all__ = ["PRESETS", "AblationConfig", "cells_of", "read_toml", "resolve", "run_ablation",
           "write_report"]
