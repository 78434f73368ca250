"""The report's Table 1 in one call: skip configurations pretrained to convergence,
timed, and probed (``ecgfast ablation`` on the command line).

- :class:`AblationConfig` / :func:`resolve`: the options (defaults: the report's
  protocol), presets and the TOML file (:mod:`.config`).
- :func:`run_ablation`: every cell (configuration x attention x seed), resumable
  (:mod:`.runner`).
- :func:`write_report`: table1.md / .csv / .json / .png with mean ± sd over seeds and
  paired differences to "none" (:mod:`.report`, :mod:`.plot`).
"""

from ecgfast.ablation.config import PRESETS, AblationConfig, read_toml, resolve
from ecgfast.ablation.report import write_report
from ecgfast.ablation.runner import cells_of, run_ablation

__all__ = ["PRESETS", "AblationConfig", "cells_of", "read_toml", "resolve", "run_ablation",
           "write_report"]
