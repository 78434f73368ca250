"""Affective ECG datasets read from their official files into labelled cohorts.

``load_dataset(name, root)`` reads WESAD, DREAMER, AMIGOS, SWELL-KW, CASE or PhysioNet's
eegmat exactly as the release delivers them (no conversion step), applies the training
pre-processing (0.8 Hz zero-phase high-pass, polyphase resampling to 256 Hz, robust
z-score per subject, 10 s windows) one subject at a time, and returns a
:class:`~ecgfast.data.Cohort` whose provenance states the dataset, root, thresholds and
labelling rules, the pre-processing, the ecgfast version, the windows per class, the
windows dropped and the subjects skipped.
:data:`DATASETS` describes each dataset: the layout it expects, its tasks and leads.
"""

from __future__ import annotations

from dataclasses import asdict

from ecgfast.data import Cohort
from ecgfast.datasets import amigos, case, dreamer, eegmat, swell, wesad
from ecgfast.datasets._common import (
    DatasetInfo,
    LoadRequest,
    check_root,
    resolve_lead,
    resolve_threshold,
)
from ecgfast.datasets.cache import cache_key, cache_path, read_cached, write_cached

#: name -> :class:`DatasetInfo`, in the order ``ecgfast datasets`` lists them.
DATASETS: dict[str, DatasetInfo] = {
    m.INFO.name: m.INFO for m in (wesad, dreamer, amigos, swell, case, eegmat)
}

__all__ = ["DATASETS", "DatasetInfo", "load_dataset"]


def load_dataset(
    name: str,
    root,
    *,
    threshold: float | None = None,
    lead: int | str | None = None,
    cache_dir=None,
    progress: bool = True,
    skip_bad: bool = False,
) -> Cohort:
    """Read dataset ``name`` from its official files under ``root`` into a Cohort.

    Args:
        name: one of ``DATASETS`` (``wesad``, ``dreamer``, ``amigos``, ``swell``, ``case``,
            ``eegmat``).
        root: the dataset's folder as released (``DATASETS[name].layout`` shows it).
        threshold: ratings strictly above it are "high" (1); default
            ``DATASETS[name].default_threshold`` (the scale's midpoint). Not allowed for
            WESAD, which has no ratings.
        lead: for two-lead datasets, the lead's name or index (default the first).
        cache_dir: if given, the pre-processed cohort is stored there on the first load
            and read back by later loads with the same files and parameters.
        progress: show a progress bar over subjects.
        skip_bad: skip (and list in ``provenance["skipped_subjects"]``, with a warning)
            a subject whose files are bad, instead of raising.

    Raises:
        ValueError: an unknown name, lead or a bad threshold.
        ECGDataError: a missing root or file (naming the layout expected), an unreadable
            or malformed file, ratings out of range, NaN samples, a contradicting
            sampling rate; each names the file and the field.
    """
    info = DATASETS.get(str(name).lower())
    if info is None:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    request = LoadRequest(resolve_threshold(info, threshold), resolve_lead(info, lead),
                          progress=progress, skip_bad=bool(skip_bad))
    root = check_root(root, info.layout)
    if cache_dir is None:
        return info.load(root, **asdict(request))
    params = {"threshold": request.threshold, "lead": request.lead, "skip_bad": request.skip_bad}
    path = cache_path(cache_dir, info.name, cache_key(info.name, root,
                                                      info.source_files(root), params))
    cohort = read_cached(path)
    if cohort is None:
        cohort = info.load(root, **asdict(request))
        write_cached(path, cohort)
    return cohort

