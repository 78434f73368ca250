"""The options of an ablation run, their presets, and the TOML file that holds them.

Keys are the ``ecgfast ablation`` flags with ``_`` for ``-`` (``max_epochs`` for
``--max-epochs``); the defaults are the report's protocol (four skip configurations, the
SSL-ECG transformation task, early stopping, arousal and valence under both splits) with
the HRV and random-init baselines, both probes, and no test subject in pretraining.
Precedence, lowest first: defaults, ``preset``, the ``--config`` file, flags.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from ecgfast.evaluation.baselines import FEATURE_MODES, parse_choices
from ecgfast.evaluation.probes import PROBES
from ecgfast.evaluation.protocol import CALIBRATIONS
from ecgfast.models import RESIDUAL_PRESETS
from ecgfast.objectives import OBJECTIVES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ATTENTION = ("off", "on", "both")
SPLIT_NAMES = ("subject", "window")
SPLITS = (*SPLIT_NAMES, "both")
PROBE_CHOICES = (*PROBES, "both")
CALIBRATE_CHOICES = (*CALIBRATIONS, "both")
FEATURE_CHOICES = (*FEATURE_MODES, "both")

#: Options that only say where things are or how they are shown: a rerun may change them.
RUNTIME_KEYS = ("cache_dir", "no_cache", "quiet")

#: ``--preset quick``: the synthetic default cut down for a 2-core CPU, a smoke test:
#: 5 subjects x 4 sessions x 20 s (40 windows), subject-wise 3-fold (each fold pretrains
#: on its training subjects, one of them held out for early stopping), at most 2 epochs
#: with patience 2, 2 seeds, 100 MLP probe steps.
PRESETS = {
    "quick": {"subjects": 5, "sessions": 4, "session_seconds": 20.0, "max_epochs": 2,
              "patience": 2, "seeds": 2, "batch_size": 16, "probe_epochs": 100,
              "split": "subject", "subject_folds": 3},
}


@dataclass(frozen=True)
class AblationConfig:
    """Every option of :func:`ecgfast.ablation.run_ablation` (see the module docstring)."""

    data: str = "synthetic"
    subjects: int = 8
    sessions: int = 4
    session_seconds: float = 60.0
    data_seed: int = 0
    fs: float | None = None
    threshold: float | None = None
    lead: str | None = None
    skip_bad: bool = False
    cache_dir: str | None = None
    no_cache: bool = False
    configs: tuple[str, ...] = ("none", "first", "first_two", "all")
    attention: str = "off"
    objective: str = "transform"
    seeds: int = 3
    max_epochs: int = 100
    patience: int = 5
    validation_fraction: float = 0.2
    batch_size: int = 128
    lr: float = 1e-3
    dropout: float = 0.1
    max_steps_per_epoch: int | None = None
    split: str = "both"
    tasks: tuple[str, ...] | None = None
    subject_folds: int = 5
    window_folds: int = 10
    probe_epochs: int = 300
    device: str = "auto"
    backend: str = "auto"
    precision: str = "auto"
    threads: int | None = None
    augment: str = "report"
    pretrain_data: str | None = None
    transductive: bool = False
    baselines: tuple[str, ...] = ("hrv", "random")
    probe: str = "both"
    calibrate: str = "none"
    features: str = "encoder"
    supervised_epochs: int = 10
    preset: str | None = None

    def __post_init__(self):
        from ecgfast.evaluation.baselines import parse_baselines

        for name in ("configs", "tasks"):
            value = getattr(self, name)
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            if value is not None:
                object.__setattr__(self, name, tuple(value))
        object.__setattr__(self, "baselines", parse_baselines(self.baselines))
        bad = [c for c in self.configs if c not in RESIDUAL_PRESETS]
        if bad or not self.configs:
            raise ValueError(f"configs: {bad or '(none)'}: each must be one of {tuple(RESIDUAL_PRESETS)}")
        if len(set(self.configs)) != len(self.configs):
            raise ValueError(f"configs: {list(self.configs)} names one more than once")
        for name, allowed in (("attention", ATTENTION), ("split", SPLITS), ("objective", OBJECTIVES),
                              ("preset", (None, *PRESETS)), ("probe", PROBE_CHOICES),
                              ("calibrate", CALIBRATE_CHOICES), ("features", FEATURE_CHOICES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("seeds", "max_epochs", "patience", "batch_size", "probe_epochs",
                     "subject_folds", "window_folds", "subjects", "sessions", "supervised_epochs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (2 if "folds" in name else 1):
                raise ValueError(f"{name} must be an integer >= {2 if 'folds' in name else 1}, got {value!r}")
        if self.threads is not None and (isinstance(self.threads, bool)
                                         or not isinstance(self.threads, int) or self.threads < 1):
            raise ValueError(f"threads must be an integer >= 1, got {self.threads!r}")
        if not 0.0 < self.validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must be in (0, 1), got {self.validation_fraction}")
        self.pretrain_config(0)  # their own checks: lr, batch size, patience, dropout
        self.encoder_config(self.configs[0], False)

    def pretrain_config(self, seed: int):
        """The :class:`~ecgfast.training.PretrainConfig` of the cells of ``seed``."""
        from ecgfast.training import PretrainConfig

        return PretrainConfig(objective=self.objective, epochs=self.max_epochs,
                              batch_size=self.batch_size, lr=self.lr, seed=seed,
                              device=self.device, patience=self.patience,
                              max_steps_per_epoch=self.max_steps_per_epoch,
                              precision=self.precision, augment=self.augment)

    def encoder_config(self, residual: str, attention: bool):
        """The :class:`~ecgfast.models.EncoderConfig` of one configuration."""
        from ecgfast.models import EncoderConfig

        return EncoderConfig(residual=residual, attention=attention, dropout=self.dropout,
                             backend=self.backend)

    @property
    def attention_settings(self) -> tuple[bool, ...]:
        return {"off": (False,), "on": (True,), "both": (False, True)}[self.attention]

    @property
    def splits(self) -> tuple[str, ...]:
        return parse_choices(self.split, SPLIT_NAMES, "split")

    @property
    def probes(self) -> tuple[str, ...]:
        return parse_choices(self.probe, PROBES, "probe")

    @property
    def calibrations(self) -> tuple[str, ...]:
        return parse_choices(self.calibrate, CALIBRATIONS, "calibrate")

    @property
    def features_modes(self) -> tuple[str, ...]:
        return parse_choices(self.features, FEATURE_MODES, "features")

    @property
    def augmentation(self) -> str:
        """The augmentation set as the tables state it."""
        return "n/a (transformation task)" if self.objective == "transform" else self.augment

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["baselines"] = ",".join(self.baselines) or "none"
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    def experiment(self) -> dict:
        """The options that decide the results (all but :data:`RUNTIME_KEYS`)."""
        return {k: v for k, v in self.to_dict().items() if k not in RUNTIME_KEYS}

    def to_toml(self) -> str:
        """The options as a TOML file that ``--config`` reads back (None left out)."""
        lines = ["# ecgfast ablation: the resolved configuration of this run"]
        for key, value in self.to_dict().items():
            if value is not None:
                lines.append(f"{key} = {json.dumps(value)}")
        return "\n".join(lines) + "\n"


FIELDS = {f.name for f in dataclasses.fields(AblationConfig)}


def read_toml(path: str | Path) -> dict:
    """The options in a TOML file; unknown keys are an error that names the file and key."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"--config {path}: no such file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"--config {path}: not valid TOML ({err})") from None
    options = {k.replace("-", "_"): v for k, v in raw.items()}
    unknown = sorted(set(options) - FIELDS)
    if unknown:
        raise ValueError(f"--config {path}: unknown key(s) {unknown}; known: {sorted(FIELDS)}")
    return options


def resolve(flags: dict, config_file: str | Path | None = None) -> AblationConfig:
    """Defaults < preset < ``config_file`` < ``flags`` (only the flags the user gave)."""
    from_file = read_toml(config_file) if config_file else {}
    preset = flags.get("preset", from_file.get("preset"))
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"preset must be one of {tuple(PRESETS)}, got {preset!r}")
    merged = {**PRESETS.get(preset, {}), **from_file, **flags}
    if preset is not None:
        merged["preset"] = preset
    try:
        return AblationConfig(**merged)
    except TypeError as err:
        raise ValueError(f"ablation options: {err}") from None
