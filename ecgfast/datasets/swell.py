"""SWELL-KW (Koldijk et al., ICMI 2014) from its raw Mobi text files and the per-minute
self-report sheet.

Expected layout under ``root`` (the SWELL-KW folder as released)::

    0 - Raw data/D - Physiology - raw data/Mobi signals text/<...pp<N>...c<B>...>.txt
        one ECG channel at 2048 Hz per participant N and block B (1-3); the names vary,
        so the tokens pp<N> and c<B> are matched case-insensitively
    Behavioral-features - per minute.xlsx   (sheet SWELLdata; anywhere under root) or a
        CSV export of it: one row per minute with PP, Blok, Condition, Valence_rc,
        Arousal_rc, ...

Tasks: ``condition`` (neutral 0, interruptions 1, time pressure 2, from the block's
Condition N / I / T); ``arousal`` and ``valence`` from the self-report: the last row of
the (participant, block) that is not relaxation (SSL-ECG takes the last row per
(participant, block)); ratings on the SAM 9-point scale 1-9 (values outside raise an
error), label 1 (high) when strictly greater than ``threshold`` (default 5, the
midpoint), else 0. Blocks whose rows are all relaxation (R) are excluded and counted,
as are recordings with no row in the sheet. One session per text file.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from ecgfast.data import Cohort, ECGDataError
from ecgfast.datasets._common import (BINARY, DatasetInfo, LoadRequest, SubjectData, build_cohort,
                                      check_range, check_root, dataset_error, rated_trial,
                                      threshold_rule)
from ecgfast.datasets.tables import read_numeric, read_rows

FS = 2048.0
CONDITIONS = {"N": 0, "I": 1, "T": 2}
CONDITION_CLASSES = ("neutral", "interruptions", "time pressure")
SCALE = (1.0, 9.0)
SIGNALS = Path("0 - Raw data") / "D - Physiology - raw data" / "Mobi signals text"
LABELS_NAME = "behavioral-features - per minute"
LAYOUT = """\
SWELL-KW/                                           root
  0 - Raw data/D - Physiology - raw data/Mobi signals text/
    pp1_..._c1.txt ...      one ECG channel at 2048 Hz per participant (pp<N>) and
                            block (c1-c3), tokens matched case-insensitively
  Behavioral-features - per minute.xlsx             (sheet SWELLdata, anywhere under root)
                            or a .csv export: PP, Blok, Condition (N/I/T/R), Valence_rc,
                            Arousal_rc per minute"""

_PP = re.compile(r"pp0*(\d+)", re.IGNORECASE)
_BLOCK = re.compile(r"(?:^|[^a-z0-9])c([1-3])(?![0-9])", re.IGNORECASE)


def _signal_dir(root: Path) -> Path:
    if (root / SIGNALS).is_dir():
        return root / SIGNALS
    for d in sorted(root.rglob("*")):
        if d.is_dir() and d.name.lower() == SIGNALS.name.lower():
            return d
    if any(_parse_name(p) for p in root.glob("*.txt")):
        return root
    raise dataset_error(root, f"no {SIGNALS.name!r} folder with pp<N>_..._c<B>.txt files",
                        LAYOUT)


def _parse_name(p: Path):
    pp, block = _PP.search(p.stem), _BLOCK.search(p.stem)
    return (int(pp.group(1)), int(block.group(1))) if pp and block else None


def labels_file(root: Path) -> Path:
    found = sorted(p for p in root.rglob("*") if p.is_file()
                   and p.stem.lower().startswith(LABELS_NAME)
                   and p.suffix.lower() in (".xlsx", ".csv"))
    if not found:
        raise dataset_error(root, "'Behavioral-features - per minute.xlsx' (or a .csv export) "
                            "not found", LAYOUT)
    return next((p for p in found if p.suffix.lower() == ".xlsx"), found[0])


def recordings(root) -> dict[int, list[tuple[int, Path]]]:
    """participant -> [(block, text file)], sorted."""
    root = check_root(root, LAYOUT)
    out: dict[int, list] = {}
    for p in sorted(_signal_dir(root).iterdir()):
        parsed = _parse_name(p) if p.is_file() and p.suffix.lower() == ".txt" else None
        if parsed:
            out.setdefault(parsed[0], []).append((parsed[1], p))
    if not out:
        raise dataset_error(root, "no pp<N>_..._c<B>.txt ECG files found", LAYOUT)
    return {k: sorted(v) for k, v in sorted(out.items())}


def source_files(root) -> list[Path]:
    root = Path(root)
    return [labels_file(check_root(root, LAYOUT))] + [
        p for files in recordings(root).values() for _, p in files
    ]


def _int_of(value, path: Path, column: str, row: int) -> int:
    if isinstance(value, str):
        m = re.search(r"\d+", value)
        if m:
            return int(m.group())
    elif isinstance(value, (int, float)) and math.isfinite(value) and value == int(value):
        return int(value)
    raise ECGDataError(f"{path}: row {row}: column {column} = {value!r} is not a number")


def read_blocks(path: Path) -> tuple[dict, dict]:
    """(participant, block) -> {"condition", "arousal", "valence"}, and the counts of
    what was excluded (relaxation blocks and rows)."""
    header, rows = read_rows(path, sheet="SWELLdata")
    names = [h.lower() for h in header]
    need = ("PP", "Blok", "Condition", "Valence_rc", "Arousal_rc")
    missing = [c for c in need if c.lower() not in names]
    if missing:
        raise ECGDataError(f"{path}: no column(s) {missing}; header: {header[:12]}...")
    col = {c: names.index(c.lower()) for c in need}
    groups: dict[tuple[int, int], list] = {}
    relax_rows = 0
    for i, row in enumerate(rows, start=2):
        row = tuple(row) + (None,) * (len(header) - len(row))
        key = (_int_of(row[col["PP"]], path, "PP", i), _int_of(row[col["Blok"]], path, "Blok", i))
        cond = str(row[col["Condition"]] or "").strip().upper()
        if cond == "R":
            relax_rows += 1
            groups.setdefault(key, [])
            continue
        if cond not in CONDITIONS:
            raise ECGDataError(f"{path}: row {i}: Condition {row[col['Condition']]!r} is not "
                               "one of N, I, T, R")
        groups.setdefault(key, []).append((i, cond, row[col["Arousal_rc"]], row[col["Valence_rc"]]))
    blocks, relax_blocks = {}, 0
    for key, entries in groups.items():
        if not entries:
            relax_blocks += 1
            continue
        conds = {c for _, c, _, _ in entries}
        if len(conds) != 1:
            raise ECGDataError(f"{path}: participant {key[0]} block {key[1]} has conditions "
                               f"{sorted(conds)}; expected one")
        i, cond, arousal, valence = entries[-1]
        rated = {}
        for name, v in (("Arousal_rc", arousal), ("Valence_rc", valence)):
            if not isinstance(v, (int, float)):
                raise ECGDataError(f"{path}: row {i}: column {name} = {v!r} is not a number")
            rated[name] = float(check_range([v], *SCALE, f"{path}: row {i}: column {name}")[0])
        blocks[key] = {"condition": CONDITIONS[cond], "arousal": rated["Arousal_rc"],
                       "valence": rated["Valence_rc"]}
    return blocks, {"relaxation_blocks": relax_blocks, "relaxation_rows": relax_rows}


def read_ecg(path: Path) -> np.ndarray:
    _, table = read_numeric(path)
    if table.shape[1] != 1:
        raise ECGDataError(f"{path}: {table.shape[1]} columns; a Mobi ECG text file has one")
    return np.ascontiguousarray(table[:, 0])


def load(root, **options) -> Cohort:
    """Load SWELL-KW (layout in the module docstring) into a :class:`~ecgfast.data.Cohort`
    with tasks condition, arousal and valence (ratings as scores)."""
    request = LoadRequest(**options)
    root, threshold = Path(root), request.threshold
    sheet = labels_file(check_root(root, LAYOUT))
    blocks, excluded = read_blocks(sheet)
    files = recordings(root)

    def read(sid: int, _path: Path) -> SubjectData:
        trials, skipped = [], 0
        for block, path in files[sid]:
            info = blocks.get((sid, block))
            if info is None:
                skipped += 1
                continue
            scores = {"arousal": info["arousal"], "valence": info["valence"]}
            trials.append(rated_trial(read_ecg(path), f"{path}: ECG", scores, threshold,
                                      condition=info["condition"]))
        if not trials:
            raise ECGDataError(f"participant {sid}: none of {[str(p) for _, p in files[sid]]} "
                               f"has a labelled block in {sheet}")
        return SubjectData(sid, FS, trials, dropped={"recordings_without_labels": skipped})

    return build_cohort(
        INFO,
        root,
        [(sid, fs[0][1]) for sid, fs in files.items()],
        read,
        request,
        classes={"condition": CONDITION_CLASSES, "arousal": BINARY, "valence": BINARY},
        score_names=("arousal", "valence"),
        provenance={
            "labels_file": str(sheet),
            "rules": {
                "condition": "the block's Condition: N -> 0 neutral, I -> 1 interruptions, "
                "T -> 2 time pressure; R (relaxation) excluded and counted",
                "arousal": threshold_rule("Arousal_rc", threshold, "1-9") + "; last "
                "non-relaxation row per (PP, Blok)",
                "valence": threshold_rule("Valence_rc", threshold, "1-9") + "; last "
                "non-relaxation row per (PP, Blok)",
            },
            "excluded": excluded,
        },
    )


INFO = DatasetInfo(
    name="swell", title="SWELL-KW (Koldijk et al., ICMI 2014)",
    layout=LAYOUT, tasks=("condition", "arousal", "valence"), default_threshold=5.0, leads=("ECG",),
    fs=FS, load=load, source_files=source_files)
