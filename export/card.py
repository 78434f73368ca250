"""The model card of an exported encoder, and the provenance entries of its metadata.

:func:`export_metadata` gives what :func:`ecgfast.export.build_onnx` writes besides the
interface: the pre-processing contract (:data:`META_PREPROCESSING`, the record of
:mod:`ecgfast.data.contract` with the input's leads) and the card as JSON
(:data:`META_CARD`). The card says what the model is, what it was trained on (the
checkpoint's provenance: source, windows, subjects, leads), how (objective, epochs, final
losses), how it scored when the run has probe results, with which software, what it is
for and what it must not be used for; a model trained on synthetic data says so in its
first line. :func:`write_card_files` writes ``<name>.card.json`` (the embedded JSON) and
``<name>.card.md`` beside an exported file. No PyTorch here: ``encoder`` is only asked for
its ``config``, ``embedding_dim`` and ``min_length``.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import onnx

from ecgfast.atomic import atomic_write_text
from ecgfast.data.contract import Preprocessing
from ecgfast.export.metadata import (
    META_CARD,
    META_PREPROCESSING,
    META_QUANTIZATION,
    read_metadata,
)
from ecgfast.provenance import contract_of_checkpoint, provenance_of, software_versions

CARD_FORMAT = "ecgfast.model_card"
CARD_VERSION = 1
#: Where ``ecgfast demo`` leaves its probe results, in the run directory.
DEMO_RESULTS = "demo_results.json"

INTENDED_USE = (
    "Research and engineering: a frozen feature extractor that turns 1-lead or multi-lead ECG "
    "windows into embeddings for downstream models (e.g. arousal/valence or stress probes) "
    "trained and validated on their own data, served with the pre-processing recorded in "
    "the file (`ecgfast embed`, `OnnxEncoder.embed_recording`).")
LIMITATIONS = (
    ("Not a medical device: not for diagnosis, screening, monitoring or any clinical or "
    "safety decision about a person."),
    ("Self-supervised: the embeddings carry no labels; a task needs its own probe, validated "
    "on held-out subjects (window-level splits overestimate accuracy)."),
    ("Inputs must go through the recorded pre-processing; signals with other leads, "
    "electrode placements or heavy artefacts than the training data may give meaningless "
    "embeddings, and flat-line windows are dropped, not embedded."),
)
SYNTHETIC_LIMITATION = (
    "Trained on the synthetic ECGSYN cohort only: its embeddings say nothing reliable about "
    "real ECG; use it to test pipelines, never on people's data for conclusions.")
_HISTORY_SKIP = ("kind", "seconds", "val_seconds", "windows_per_s", "global_step")
_PROBE_KEYS = ("accuracy_mean", "accuracy_std", "f1_mean", "f1_std", "split", "n_folds")


def _checkpoint_config(model_or_checkpoint) -> tuple[dict, Path | None]:
    if not isinstance(model_or_checkpoint, (str, os.PathLike)):
        return {}, None
    from ecgfast.training.checkpoint import CONFIG, resolve_checkpoint

    ckpt_dir = resolve_checkpoint(model_or_checkpoint)
    return json.loads((ckpt_dir / CONFIG).read_text()), ckpt_dir


def export_metadata(model_or_checkpoint, encoder, *, preprocessing: Preprocessing | None = None,
                    probe_results: str | os.PathLike | None = None) -> dict[str, str]:
    """The metadata entries of the contract and the card for an export of
    ``model_or_checkpoint`` (an encoder, or a checkpoint directory whose config gives the
    provenance). ``preprocessing`` gives the chain of an encoder that has no checkpoint
    (it overrides a checkpoint's); ``probe_results`` a JSON file of ``ecgfast evaluate
    --out`` (default: the run's ``demo_results.json`` when it scored this checkpoint)."""
    config, ckpt_dir = _checkpoint_config(model_or_checkpoint)
    chain = preprocessing
    if chain is None and ckpt_dir is not None:
        contract = contract_of_checkpoint(config, str(ckpt_dir))
        chain = None if contract is None else contract.preprocessing
        if chain is None:
            warnings.warn(f"{ckpt_dir} records no pre-processing (trained on windows given to "
                          "pretrain without provenance=): "
                          "the exported file carries none, and serving it uses the default "
                          "chain, with a warning", stacklevel=3)
    leads = encoder.config.leads
    card = build_card(config, encoder, chain, _probe(ckpt_dir, config, probe_results))
    meta = {META_CARD: json.dumps(card)}
    if chain is not None:
        meta[META_PREPROCESSING] = json.dumps(chain.to_record(leads))
    return meta


def _probe(ckpt_dir: Path | None, config: dict, given) -> dict | None:
    """The probe results of ``given``, else of the run's demo when it scored this very
    checkpoint (its last epoch); None when there are none."""
    path = Path(given) if given is not None else None
    if path is None and ckpt_dir is not None and ckpt_dir.parent.name == "checkpoints":
        demo = ckpt_dir.parent.parent / DEMO_RESULTS
        history = (json.loads(demo.read_text()).get("pretraining") or [{}]) \
            if demo.is_file() else [{}]
        if history[-1].get("epoch") == config.get("epoch"):
            path = demo
    if path is None:
        return None
    try:
        results = json.loads(path.read_text())["results"]
        rows = {str(model): {str(task): {k: r[k] for k in _PROBE_KEYS if k in r}
                             for task, r in tasks.items()}
                for model, tasks in results.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"{path}: not a probe results file of `ecgfast evaluate --out` or "
                         f"`ecgfast demo` ({type(err).__name__}: {err})") from None
    return {"file": path.name, "results": rows}


def summary_line(data: dict, objective: str | None) -> str:
    """The card's first line: what the model is and, first of all, synthetic or not."""
    how = f"self-supervised ({objective})" if objective else "an ecgfast encoder"
    if data.get("synthetic"):
        return (f"SYNTHETIC-DATA MODEL: {how} ECG encoder trained on the synthetic ECGSYN "
                "cohort only, not on real ECG; for testing pipelines, not for use on people")
    if not data:
        return (f"ECG encoder ({how}) whose training data were not recorded; research use "
                "only, not a medical device")
    subjects = data.get("n_subjects")
    source = data.get("dataset") or data.get("source") or "data whose source was not recorded"
    return (f"ECG encoder, {how}, trained on {source}: "
            f"{data.get('n_windows')} windows"
            f"{f' from {subjects} subjects' if subjects else ''}; research use only, not a "
            "medical device")


def build_card(config: dict, encoder, chain: Preprocessing | None, probe: dict | None) -> dict:
    """The card (JSON-serialisable) of ``encoder`` trained as ``config`` (a checkpoint's
    config.json; {} for an encoder without one) says."""
    provenance = provenance_of(config)
    data = provenance.get("data") or {}
    history = config.get("history") or []
    last = history[-1] if history else {}
    training = config.get("training") or {}
    return {
        "format": CARD_FORMAT, "version": CARD_VERSION,
        "summary": summary_line(data, config.get("objective")),
        "model": {"architecture": "ecgfast ECGEncoder (SSL-ECG 3-block 1-D CNN)",
                  "encoder_config": encoder.config.to_dict(),
                  "embedding_dim": int(encoder.embedding_dim),
                  "min_length": int(encoder.min_length),
                  "leads": None if encoder.config.leads is None else list(encoder.config.leads)},
        "training_data": data or None,
        "preprocessing": None if chain is None else chain.to_record(encoder.config.leads),
        "training": None if not config else {
            "objective": config.get("objective"), "epochs_trained": config.get("epoch"),
            "epochs_planned": training.get("epochs"), "batch_size": training.get("batch_size"),
            "optimizer": training.get("optimizer"), "lr": training.get("lr"),
            "seed": training.get("seed"), "precision": training.get("precision"),
            "n_windows": config.get("n_windows"), "window_length": config.get("window_length"),
            "data_fingerprint": config.get("data_fingerprint"),
            "final_epoch": {k: v for k, v in last.items() if k not in _HISTORY_SKIP},
        },
        "evaluation": probe,
        "software": {"training": provenance.get("software"), "export": software_versions()},
        "intended_use": INTENDED_USE,
        "limitations": ([SYNTHETIC_LIMITATION] if data.get("synthetic") else []) + list(LIMITATIONS),
    }


def _lines(title: str, pairs) -> list[str]:
    return [f"## {title}", ""] + [f"- {k}: {v}" for k, v in pairs if v not in (None, "", [])] + [""]


def render_markdown(card: dict, file_name: str, quantization: str | None = None) -> str:
    """The card as Markdown; its first line is the card's summary."""
    model, data, train = card["model"], card.get("training_data") or {}, card.get("training")
    out = [f"# {card['summary']}", "", (f"Model card of `{file_name}` "
           f"({'INT8 ' + quantization if quantization else 'float32'})."), ""]
    out += _lines("Model", [("architecture", model["architecture"]),
                            ("embedding", f"{model['embedding_dim']}-d"),
                            ("leads", ", ".join(model["leads"] or []) or
                             f"{model['encoder_config'].get('in_channels', 1)}, unnamed"),
                            ("shortest input", f"{model['min_length']} samples")])
    out += _lines("Training data", [(k.replace("_", " "), data[k]) for k in data]) if data else [
        "## Training data", "", "Not recorded.", ""]
    chain = card.get("preprocessing")
    if chain:
        out += _lines(f"Pre-processing (contract version {chain['version']})",
                      [(k, chain[k]) for k in chain if k not in ("format", "version")])
    else:
        out += ["## Pre-processing", "", ("Not recorded: serving applies the default chain of "
                "the serving ecgfast version, with a warning."), ""]
    if train:
        final = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                          for k, v in train["final_epoch"].items())
        out += _lines("Training", [(k.replace("_", " "), train[k]) for k in train
                                   if k != "final_epoch"] + [("final epoch", final)])
    out += ["## Evaluation", ""]
    probe = card.get("evaluation")
    if probe:
        out += [(f"Probe results from `{probe['file']}` (accuracy and macro-F1, mean ± std "
                "over folds):"), "", "| model | task | split | accuracy | F1 |", "|---|---|---|---|---|"]
        for name, tasks in probe["results"].items():
            for task, r in tasks.items():
                out.append(f"| {name} | {task} | {r.get('split', '?')} | "
                           f"{100 * r['accuracy_mean']:.1f} ± {100 * r['accuracy_std']:.1f} | "
                           f"{100 * r['f1_mean']:.1f} ± {100 * r['f1_std']:.1f} |")
        out.append("")
    else:
        out += ["No probe results were recorded with this run.", ""]
    out += ["## Intended use", "", card["intended_use"], "", "## Limitations", ""]
    out += [f"- {item}" for item in card["limitations"]] + [""]
    software = card["software"]
    out += _lines("Software", [(when, ", ".join(f"{k} {v}" for k, v in (software[when] or {}).items()))
                               for when in ("training", "export")])
    return "\n".join(out)


def card_paths(onnx_path: str | os.PathLike) -> tuple[Path, Path]:
    """``(<name>.card.md, <name>.card.json)`` beside ``<name>.onnx``."""
    path = Path(onnx_path)
    stem = path.name[: -len(path.suffix)] if path.suffix else path.name
    return path.with_name(stem + ".card.md"), path.with_name(stem + ".card.json")


def write_card_files(onnx_path: str | os.PathLike) -> tuple[Path, Path]:
    """Write the card embedded in ``onnx_path`` beside it, as Markdown and as JSON;
    ValueError naming the file when it has none."""
    metadata = read_metadata(onnx.load(str(onnx_path), load_external_data=False))
    if META_CARD not in metadata:
        raise ValueError(f"{onnx_path}: has no model card ({META_CARD}) in its metadata")
    card = json.loads(metadata[META_CARD])
    md, js = card_paths(onnx_path)
    atomic_write_text(js, json.dumps(card, indent=2) + "\n")
    atomic_write_text(md, render_markdown(card, Path(onnx_path).name,
                                          metadata.get(META_QUANTIZATION)))
    return md, js
