"""SWELL-KW (Koldijk et al., ICMI 2014) from its raw Mobi recordings and the per-minute
self-report sheet.

Expected layout under ``root`` (the SWELL-KW folder as released; the official release
is DANS doi:10.17026/dans-x55-69zp)::

    0 - Raw data/D - Physiology - raw data/Mobi signals (raw and filtered)/
        pp<N>_<date>_c<B>.S00   TMSi Poly5 recordings at 2048 Hz, one per participant N and
        block B (1-3), e.g. pp10_8-10-2012-c2.S00; a ..._c<B>_cont.S00 file continues
        block B (the data repository's web view spells the folder
        "Mobi signals _raw and filtered_"; both are found anywhere under root)
    or, as some users converted them, .../Mobi signals text/<...pp<N>...c<B>...>.txt
        one ECG column at 2048 Hz per participant and block
    Behavioral-features - per minute.xlsx   (sheet SWELLdata; anywhere under root) or its
        tab-separated export (.tab, as the data repository serves it) or a .csv: one row
        per minute with PP, Blok, Condition, Valence_rc, Arousal_rc, ...

The tokens pp<N> and c<B> are matched case-insensitively. From a Poly5 file the ECG is
the one channel whose description names an ECG (``ECG`` or ``EKG``), in its physical
unit; its header's rate must be 2048 Hz. When both folders exist the Poly5 recordings
(the release) are read. A block recorded in several files (``_cont``) is read file by
file in time order (the Poly5 headers' start times, else the name: the file without
``_cont`` first); each file is its own session with the block's labels, so no window
spans the junction, and ``provenance["joined"]`` lists each such block's files, the
order's basis and the gap between them (from the start times, 1 s resolution).

Tasks: ``condition`` (neutral 0, interruptions 1, time pressure 2, from the block's
Condition N / I / T); ``arousal`` and ``valence`` from the self-report: the last row of
the (participant, block) that is not relaxation (SSL-ECG takes the last row per
(participant, block)); ratings on the SAM 9-point scale 1-9 (values outside raise an
error), label 1 (high) when strictly greater than ``threshold`` (default 5, the
midpoint), else 0. Blocks whose rows are all relaxation (R) are excluded and counted,
as are recordings with no row in the sheet. One session per recording file.
"""

from __future__ import annotations

import itertools
import math
import re
from datetime import datetime
from pathlib import Path

import numpy as np

from ecgfast.data import Cohort, ECGDataError, poly5
from ecgfast.datasets._common import (
    BINARY,
    DatasetInfo,
    LoadRequest,
    SubjectData,
    build_cohort,
    check_range,
    check_root,
    dataset_error,
    rated_trial,
    threshold_rule,
)
from ecgfast.datasets.tables import read_numeric, read_rows

FS = 2048.0
CONDITIONS = {"N": 0, "I": 1, "T": 2}
CONDITION_CLASSES = ("neutral", "interruptions", "time pressure")
SCALE = (1.0, 9.0)
PHYSIOLOGY = Path("0 - Raw data") / "D - Physiology - raw data"
#: The recording folders: Poly5 (the release's two spellings), then the text conversion.
FOLDERS = (("mobi signals (raw and filtered)", poly5.SUFFIXES),
           ("mobi signals _raw and filtered_", poly5.SUFFIXES),
           ("mobi signals text", (".txt",)))
LABELS_NAME = "behavioral-features - per minute"
LABEL_SUFFIXES = (".xlsx", ".tab", ".csv")  # in order of preference
LAYOUT = """\
SWELL-KW/                                           root
  0 - Raw data/D - Physiology - raw data/Mobi signals (raw and filtered)/
    pp1_18-9-2012_c1.S00 ...  TMSi Poly5 at 2048 Hz per participant (pp<N>) and block
                              (c1-c3); ..._c2_cont.S00 continues block 2; the folder may
                              read "Mobi signals _raw and filtered_"
  or .../Mobi signals text/pp1_..._c1.txt ...   one ECG column at 2048 Hz (a conversion)
  Behavioral-features - per minute.xlsx             (sheet SWELLdata, anywhere under root)
                            or its .tab / .csv export: PP, Blok, Condition (N/I/T/R),
                            Valence_rc, Arousal_rc per minute"""

_PP = re.compile(r"pp0*(\d+)", re.IGNORECASE)
_BLOCK = re.compile(r"(?:^|[^a-z0-9])c([1-3])(?![0-9])", re.IGNORECASE)
_CONT = re.compile(r"(?:^|[^a-z0-9])cont(?![a-z0-9])", re.IGNORECASE)


def _signal_dir(root: Path) -> tuple[Path, tuple[str, ...]]:
    """The recording folder and the suffixes read there (the release's Poly5 first)."""
    dirs = [d for d in [root, *sorted(root.rglob("*"))] if d.is_dir()]
    for name, suffixes in FOLDERS:
        for d in dirs:
            if d.name.lower() == name:
                return d, suffixes
    for suffixes in (poly5.SUFFIXES, (".txt",)):
        if any(_parse_name(p) for p in root.iterdir() if p.suffix.lower() in suffixes):
            return root, suffixes
    raise dataset_error(root, "no 'Mobi signals (raw and filtered)' folder with "
                        "pp<N>_..._c<B>.S00 files (nor 'Mobi signals text' with .txt files)",
                        LAYOUT)


def _parse_name(p: Path):
    pp, block = _PP.search(p.stem), _BLOCK.search(p.stem)
    return (int(pp.group(1)), int(block.group(1))) if pp and block else None


def labels_file(root: Path) -> Path:
    found = sorted(p for p in root.rglob("*") if p.is_file()
                   and p.stem.lower().startswith(LABELS_NAME)
                   and p.suffix.lower() in LABEL_SUFFIXES)
    if not found:
        raise dataset_error(root, "'Behavioral-features - per minute.xlsx' (or its .tab or "
                            ".csv export) not found", LAYOUT)
    return min(found, key=lambda p: LABEL_SUFFIXES.index(p.suffix.lower()))


def _in_time_order(files: list[Path]) -> tuple[list[Path], str, list]:
    """A block's files in time order, the order's basis, and each file's start (a
    datetime, or None) and sample count (Poly5 headers; None for text files)."""
    heads = {p: poly5.read_poly5_header(p) if p.suffix.lower() in poly5.SUFFIXES else None
             for p in files}
    starts = {p: h.start if h else None for p, h in heads.items()}
    if len(files) > 1 and all(starts.values()):
        ordered, basis = sorted(files, key=lambda p: (starts[p], p.name)), "header start time"
    else:
        ordered = sorted(files, key=lambda p: (bool(_CONT.search(p.stem)), p.name))
        basis = "file name (the file without _cont first)"
    return ordered, basis, [(starts[p], heads[p].n_samples / heads[p].fs if heads[p] else None)
                            for p in ordered]


def _joined(pp: int, block: int, files: list[Path], basis: str, spans) -> dict:
    gaps = []
    for (a, seconds), (b, _) in itertools.pairwise(spans):
        known = isinstance(a, datetime) and isinstance(b, datetime) and seconds is not None
        gaps.append(round((b - a).total_seconds() - seconds, 3) if known else None)
    return {"participant": pp, "block": block, "files": [p.name for p in files],
            "order": basis, "gaps_s": gaps,
            "joined_as": "one session per file, same labels; no window spans a junction"}


def recordings(root) -> dict[int, list[tuple[int, Path]]]:
    """participant -> [(block, recording file)], by block, each block's files in time
    order."""
    return _recordings(check_root(root, LAYOUT))[0]


def _recordings(root: Path) -> tuple[dict, list]:
    folder, suffixes = _signal_dir(root)
    blocks: dict[tuple[int, int], list[Path]] = {}
    for p in sorted(folder.iterdir()):
        parsed = _parse_name(p) if p.is_file() and p.suffix.lower() in suffixes else None
        if parsed:
            blocks.setdefault(parsed, []).append(p)
    if not blocks:
        raise dataset_error(root, f"no pp<N>_..._c<B> recordings ({', '.join(suffixes)}) in "
                            f"{folder}", LAYOUT)
    out: dict[int, list] = {}
    joined = []
    for (pp, block), files in sorted(blocks.items()):
        ordered, basis, spans = _in_time_order(files)
        if len(ordered) > 1:
            joined.append(_joined(pp, block, ordered, basis, spans))
        out.setdefault(pp, []).extend((block, p) for p in ordered)
    return out, joined


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
    """The ECG of one recording: the Poly5 channel whose description names an ECG (at
    2048 Hz), or a text file's one column."""
    if path.suffix.lower() in poly5.SUFFIXES:
        header = poly5.read_poly5_header(path)
        ecg = poly5.ecg_channels(header.names)
        if len(ecg) != 1:
            found = "no channel" if not ecg else f"{len(ecg)} channels"
            raise ECGDataError(f"{path}: {found} whose description names an ECG among "
                               f"{header.names}; expected one")
        if header.fs != FS:
            raise ECGDataError(f"{path}: sampled at {header.fs:g} Hz; SWELL-KW's Mobi "
                               f"recordings are {FS:g} Hz")
        return poly5.read_poly5(path, ecg)[1][0]
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
    files, joined = _recordings(root)

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
            "joined": joined,
        },
    )


INFO = DatasetInfo(
    name="swell", title="SWELL-KW (Koldijk et al., ICMI 2014)",
    layout=LAYOUT, tasks=("condition", "arousal", "valence"), default_threshold=5.0, leads=("ECG",),
    fs=FS, load=load, source_files=source_files)
