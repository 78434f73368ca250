"""A SYNTHETIC labelled ECG cohort for tests, examples and smoke runs.

THIS IS NOT REAL AFFECT DATA. The windows are ECGSYN signals
(:func:`ecgfast.data.ecgsyn.ecgsyn`) whose "arousal" and "valence" labels were turned
into ECG changes by the rules below, chosen to resemble reported physiology (higher heart
rate and sympathetic tone with arousal, more respiratory sinus arrhythmia with positive
affect). A model that learns them has learned these rules, nothing about emotions.

Per subject (drawn once from the seed), so that subjects differ about as much as the
label effects:

- baseline heart rate U(58, 82) bpm; heart-rate std U(1.5, 3.5) bpm;
  LF/HF ratio log-uniform in (0.5, 2); respiration U(0.22, 0.32) Hz;
- P-QRS-T morphology: the paper's a_i scaled by exp(N(0, 0.15)) (R: exp(N(0, 0.1))),
  b_i by exp(N(0, 0.1)), theta_i shifted by N(0, 0.04) rad (R stays at 0);
- white measurement noise U(0.01, 0.03) mV; baseline wander U(0.05, 0.2) mV;
  electrode gain U(0.6, 1.5) (removed again by the z-score).

Label effects (multiplicative effects compose when both labels are high):

- high arousal: heart rate +U(8, 15) bpm; heart-rate std x 0.7; LF/HF x 2;
  T-wave weight a_T x 1.15; extra muscle (EMG) noise, white noise high-passed at 20 Hz,
  std 0.02 mV.
- high valence: LF/HF x 0.6 and heart-rate std x 1.25 (more HF, respiration-coupled
  heart-rate variability); respiration x 0.85 (slower) with baseline wander x 1.3
  (deeper breathing); T-wave weight a_T x 0.9.

Each session also gets its own jitter: heart rate + N(0, 2.5) bpm, heart-rate std and
LF/HF x exp(N(0, 0.15)), a_T x exp(N(0, 0.05)).

Every subject gets the four (arousal, valence) combinations once per four sessions, in
a random order. The raw sessions go through
:func:`ecgfast.data.windowing.preprocess_subject` (the same chain as real recordings:
0.8 Hz high-pass, resample, robust z-score, 10 s windows), with the z-score statistics
taken per subject over all of that subject's sessions (the papers' per-person
normalisation).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import signal as sps

from ecgfast import __version__
from ecgfast.data.cohort import BINARY_CLASSES, Cohort
from ecgfast.data.contract import SUBJECT_CHAIN
from ecgfast.data.ecgsyn import DEFAULT_MORPHOLOGY, ecgsyn
from ecgfast.data.windowing import preprocess_subject

__all__ = ["DESCRIPTION", "Cohort", "make_cohort", "session_labels"]

DESCRIPTION = "SYNTHETIC ECGSYN cohort (ecgfast.data.synthetic); labels are not real affect"

#: The four (arousal, valence) combinations, ordered so that any two consecutive
#: entries (cyclically) differ in both labels.
_COMBINATIONS = ((0, 0), (1, 1), (0, 1), (1, 0))
_T = 4  # index of the T wave in (P, Q, R, S, T)


def _subject_params(rng: np.random.Generator) -> dict:
    base = {k: np.array(v) for k, v in DEFAULT_MORPHOLOGY.items()}
    a = base["a"] * np.exp(rng.normal(0.0, 0.15, 5))
    a[2] = base["a"][2] * math.exp(rng.normal(0.0, 0.1))
    theta = base["theta"] + rng.normal(0.0, 0.04, 5)
    theta[2] = 0.0
    return {
        "heart_rate": rng.uniform(58.0, 82.0),
        "heart_rate_std": rng.uniform(1.5, 3.5),
        "lf_hf_ratio": math.exp(rng.uniform(math.log(0.5), math.log(2.0))),
        "respiration_hz": rng.uniform(0.22, 0.32),
        "morphology": {"theta": theta, "a": a, "b": base["b"] * np.exp(rng.normal(0, 0.1, 5))},
        "noise_mv": rng.uniform(0.01, 0.03),
        "baseline_mv": rng.uniform(0.05, 0.2),
        "gain": rng.uniform(0.6, 1.5),
    }


def _session_signal(
    subject: dict, arousal: int, valence: int, seconds: float, fs: float, rng
) -> np.ndarray:
    """Raw session ECG in mV, (round(seconds * fs),) float64."""
    hr = subject["heart_rate"] + rng.normal(0.0, 2.5)
    hr_std = subject["heart_rate_std"] * math.exp(rng.normal(0.0, 0.15))
    lf_hf = subject["lf_hf_ratio"] * math.exp(rng.normal(0.0, 0.15))
    resp, baseline = subject["respiration_hz"], subject["baseline_mv"]
    a = subject["morphology"]["a"].copy()
    a[_T] *= math.exp(rng.normal(0.0, 0.05))
    if arousal:
        hr += rng.uniform(8.0, 15.0)
        hr_std *= 0.7
        lf_hf *= 2.0
        a[_T] *= 1.15
    if valence:
        lf_hf *= 0.6
        hr_std *= 1.25
        resp *= 0.85
        baseline *= 1.3
        a[_T] *= 0.9
    x = ecgsyn(
        seconds,
        fs,
        heart_rate=hr,
        heart_rate_std=hr_std,
        lf_hf_ratio=lf_hf,
        noise_mv=subject["noise_mv"],
        morphology={**subject["morphology"], "a": a},
        respiration_hz=resp,
        baseline_mv=baseline,
        rng=rng,
    ).astype(np.float64)
    if arousal:
        sos = sps.butter(2, 20.0, btype="highpass", fs=fs, output="sos")
        emg = sps.sosfilt(sos, rng.normal(0.0, 1.0, x.shape[0]))
        x += 0.02 * emg / emg.std()
    return x * subject["gain"]


def session_labels(subject_index: int, sessions_per_subject: int, rng) -> list[tuple[int, int]]:
    """(arousal, valence) of each session of one subject: every combination once per
    four sessions in a random order; with fewer than four sessions, a cyclic run of
    :data:`_COMBINATIONS` starting at a subject-dependent offset."""
    if sessions_per_subject < 4:
        start = 2 * subject_index
        return [_COMBINATIONS[(start + j) % 4] for j in range(sessions_per_subject)]
    labels = []
    while len(labels) < sessions_per_subject:
        block = [_COMBINATIONS[i] for i in rng.permutation(4)]
        labels.extend(block[: sessions_per_subject - len(labels)])
    return labels


def make_cohort(
    n_subjects: int = 8,
    sessions_per_subject: int = 4,
    session_seconds: float = 60.0,
    fs: float = 256.0,
    window_seconds: float = 10.0,
    seed: int = 0,
) -> Cohort:
    """Generate the SYNTHETIC cohort described in the module docstring.

    Args:
        n_subjects: number of subjects (>= 1).
        sessions_per_subject: sessions (recordings) per subject (>= 1); >= 4 gives each
            subject every (arousal, valence) combination.
        session_seconds: length of each session in seconds (>= window_seconds).
        fs: sampling rate of the generated signals and of the windows, in Hz (>= 64).
        window_seconds: window length in seconds; windows do not overlap.
        seed: the same seed gives the same cohort; subject k's data does not depend on
            n_subjects.

    Returns:
        :class:`Cohort` with N = n_subjects * sessions_per_subject *
        floor(session_seconds / window_seconds) windows (minus any flat ones: none in
        practice) of round(window_seconds * fs) samples.
    """
    for name, value, low in (
        ("n_subjects", n_subjects, 1),
        ("sessions_per_subject", sessions_per_subject, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"make_cohort: {name} must be an int >= {low}, got {value!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"make_cohort: seed must be an int >= 0, got {seed!r}")
    if not (isinstance(fs, (int, float)) and fs >= 64):
        raise ValueError(f"make_cohort: fs must be >= 64 Hz, got {fs!r}")
    if not (isinstance(window_seconds, (int, float)) and window_seconds > 0):
        raise ValueError(f"make_cohort: window_seconds must be > 0, got {window_seconds!r}")
    if not (isinstance(session_seconds, (int, float)) and session_seconds >= window_seconds):
        raise ValueError(
            f"make_cohort: session_seconds ({session_seconds!r}) must be >= window_seconds "
            f"({window_seconds!r})"
        )
    fs = float(fs)
    chain = SUBJECT_CHAIN.of({"target_fs": fs, "window_seconds": float(window_seconds)},
                             "make_cohort", SUBJECT_CHAIN)
    parts = {k: [] for k in ("windows", "subject", "session", "arousal", "valence")}
    session_id = 0
    for s in range(n_subjects):
        rng = np.random.default_rng([seed, s])
        subject = _subject_params(rng)
        labels = session_labels(s, sessions_per_subject, rng)
        raws = [
            _session_signal(subject, a, v, session_seconds, fs, np.random.default_rng([seed, s, j]))
            for j, (a, v) in enumerate(labels)
        ]
        per_session = preprocess_subject(
            raws,
            fs,
            preprocessing=chain,
            sources=[f"synthetic subject {s} session {session_id + j}" for j in range(len(raws))],
            source=f"synthetic subject {s}",
        )
        for (a, v), win in zip(labels, per_session):
            w = win.windows
            n = w.shape[0]
            parts["windows"].append(w)
            parts["subject"].append(np.full(n, s, dtype=np.int64))
            parts["session"].append(np.full(n, session_id, dtype=np.int64))
            parts["arousal"].append(np.full(n, a, dtype=np.int64))
            parts["valence"].append(np.full(n, v, dtype=np.int64))
            session_id += 1
    arrays = {k: np.concatenate(v) for k, v in parts.items()}
    provenance = {
        "dataset": "synthetic",
        "description": DESCRIPTION,
        "params": {
            "n_subjects": int(n_subjects),
            "sessions_per_subject": int(sessions_per_subject),
            "session_seconds": float(session_seconds),
            "seed": int(seed),
        },
        "rules": {
            "arousal": "0/1 as generated (module docstring of ecgfast.data.synthetic)",
            "valence": "0/1 as generated (module docstring of ecgfast.data.synthetic)",
        },
        "preprocessing": chain.to_record(),
        "ecgfast_version": __version__,
    }
    tasks = ("arousal", "valence")
    return Cohort(arrays["windows"], arrays["subject"], arrays["session"], fs,
                  labels={t: arrays[t] for t in tasks},
                  classes=dict.fromkeys(tasks, BINARY_CLASSES), scores={},
                  provenance=provenance)
