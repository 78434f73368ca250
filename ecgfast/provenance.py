"""What a checkpoint records about its training data, and reads back for a model card.

:func:`describe_data` describes the windows a run trains on (their source, windows,
subjects, leads, and the pre-processing record of :mod:`ecgfast.data.contract`), from a
:class:`~ecgfast.data.Cohort`, a window store or a recording; :func:`checkpoint_provenance`
adds the software versions and is what :func:`ecgfast.training.pretrain` writes into the
checkpoint's ``config.json`` under :data:`KEY`; :func:`provenance_of` and
:func:`contract_of_checkpoint` read it back. No PyTorch here (versions are read from the
installed distributions' metadata, not by importing them).
"""

from __future__ import annotations

import platform
from importlib import metadata

import numpy as np

from ecgfast.data.contract import Contract, is_record, read_contract

#: The key of ``config.json`` (a checkpoint's config) that holds the provenance.
KEY = "provenance"

#: Distributions whose versions a checkpoint and a model card name.
SOFTWARE = ("torch", "triton", "numpy", "scipy", "onnx", "onnxscript", "onnxruntime",
            "onnxruntime-gpu")


def software_versions(names=SOFTWARE) -> dict:
    """``{"ecgfast": ..., "python": ..., name: version}`` for the installed ``names``."""
    from ecgfast import __version__

    found = {"ecgfast": __version__, "python": platform.python_version()}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def describe_data(windows, *, cohort=None, source: str | None = None,
                  preprocessing: dict | None = None) -> dict:
    """The provenance of training windows: ``{"data": {...}, "preprocessing": record}``.

    Args:
        windows: the windows trained on (an array, a tensor or a
            :class:`~ecgfast.data.WindowStore`, which describes itself from its manifest).
        cohort: the :class:`~ecgfast.data.Cohort` they come from, if any (its provenance
            names the dataset, the subjects and the pre-processing).
        source: what the user named (a path, ``NAME:ROOT``, "synthetic").
        preprocessing: the chain's record when the caller ran it (a recording); else it
            is taken from the cohort or the store, or left None (unknown).

    ``data`` holds ``source``, ``dataset``, ``synthetic`` (True only for the synthetic
    ECGSYN cohort), ``n_windows``, ``n_subjects``, ``n_records``, ``leads`` (None when
    unknown) and ``window_length``.
    """
    data = {"source": source, "dataset": None, "synthetic": False,
            "n_windows": len(windows), "n_subjects": None, "n_records": None,
            "leads": None, "window_length": int(windows.shape[-1])}
    manifest = getattr(windows, "manifest", None)
    if cohort is not None:
        prov = cohort.provenance
        data.update(dataset=prov.get("dataset"), synthetic=prov.get("dataset") == "synthetic",
                    n_subjects=int(np.unique(cohort.subject).size),
                    title=prov.get("title") or prov.get("description"))
        lead = prov.get("lead")
        if isinstance(lead, dict) and lead.get("name") is not None:
            data["leads"] = [str(lead["name"])]
        preprocessing = preprocessing or prov.get("preprocessing")
    elif isinstance(manifest, dict):
        info = windows.info()
        data.update(source=source or info["path"], n_subjects=info["subjects"],
                    n_records=info["records"], leads=list(windows.leads),
                    store_sources=manifest.get("params", {}).get("sources"),
                    notes=info["notes"])
        preprocessing = preprocessing or manifest.get("preprocessing")
    return {"data": data, "preprocessing": preprocessing if is_record(preprocessing) else None}


def checkpoint_provenance(provenance: dict | None, windows) -> dict:
    """What :func:`~ecgfast.training.pretrain` records under :data:`KEY`: ``provenance``
    (from :func:`describe_data`; when None, what ``windows`` say of themselves) with the
    versions of the software that trained."""
    found = dict(provenance) if provenance is not None else describe_data(windows)
    return {**found, "software": software_versions()}


def provenance_of(config: dict) -> dict:
    """The provenance a checkpoint's ``config`` recorded; ``{}`` for the empty config of an
    encoder exported without a checkpoint."""
    found = config.get(KEY)
    return found if isinstance(found, dict) else {}


def contract_of_checkpoint(config: dict, where: str) -> Contract | None:
    """The pre-processing contract a checkpoint was trained with (None when it recorded
    none); :class:`~ecgfast.data.contract.ContractError` naming ``where`` when this
    version cannot reproduce it."""
    record = provenance_of(config).get("preprocessing")
    return None if record is None else read_contract(record, where)
