"""ECGSYN: the dynamical model of the ECG of McSharry, Clifford, Tarassenko and Smith.

P. E. McSharry et al., "A dynamical model for generating synthetic electrocardiogram
signals", IEEE Trans. Biomed. Eng. 50(3), 2003. Implemented here from the published
equations:

    dx/dt = alpha x - omega y,   dy/dt = alpha y + omega x,   alpha = 1 - sqrt(x^2 + y^2)
    dz/dt = -sum_i a_i dtheta_i exp(-dtheta_i^2 / (2 b_i^2)) - (z - z0(t))
    theta = atan2(y, x),   dtheta_i = (theta - theta_i) wrapped to [-pi, pi)
    z0(t) = A sin(2 pi f_resp t)                                    (baseline wander)

with one Gaussian event per wave i in (P, Q, R, S, T) at angle theta_i, of weight a_i
and width b_i, and omega(t) = 2 pi / RR(t) from an RR tachogram.

How it is integrated (fast, vectorised, no Python loop over time):

- The (x, y) limit cycle is attracting with radius 1; started on it, the trajectory stays
  on it, so theta(t) is exactly the integral of omega(t). With the RR interval held
  constant over each beat (as in the paper's implementation), theta advances linearly by
  2 pi per beat, from -pi at the beat's start (the R peak, theta = 0, is mid-beat).
- The z equation is then linear: z' = g(t) - z + z0(t) with a known forcing g(t). The
  morphology part is integrated on an internal grid (512 Hz or 2 fs, whichever is
  larger) with the trapezoidal rule, which for this linear ODE is a first-order IIR
  filter (``scipy.signal.lfilter``), after a 5 s burn-in so that the start transient
  (time constant 1 s) has decayed; then it is sampled at ``fs`` by linear interpolation
  and scaled to -0.4..1.2 mV (the paper's min-max scaling).
- The z0 term's response is the ODE's steady-state sinusoid; ``baseline_mv`` sets its
  amplitude in the output (so the forcing amplitude is ``A = baseline_mv *
  sqrt(1 + (2 pi f_resp)^2)``), added after the scaling.

RR tachogram (the paper's section II-B): a power spectrum with two Gaussian peaks,
Mayer waves (LF, 0.1 Hz) and respiratory sinus arrhythmia (HF, at ``respiration_hz``),
each of std 0.01 Hz, power ratio LF/HF = ``lf_hf_ratio``; random phases; inverse FFT at
4 Hz; scaled to mean 60/HR s and std 60 HR_std / HR^2 s (so the heart rate has std about
``heart_rate_std`` bpm); clipped to 0.2..3 s.

Heart-rate dependence (as in the paper's implementation): with h = sqrt(HR / 60), the
widths b_i are multiplied by h and the angles theta_i by (sqrt(h), h, 1, h, sqrt(h)) for
(P, Q, R, S, T), so that the QT interval shortens less than the RR interval.

Measurement noise: white Gaussian, std ``noise_mv`` mV.
"""

from __future__ import annotations

import math

import numpy as np

from ecgfast.data.errors import ECGDataError

#: Wave names and the paper's default parameters (Table 1 of McSharry et al. 2003).
WAVES = ("P", "Q", "R", "S", "T")
DEFAULT_MORPHOLOGY = {
    "theta": (-math.pi / 3, -math.pi / 12, 0.0, math.pi / 12, math.pi / 2),  # radians
    "a": (1.2, -5.0, 30.0, -7.5, 0.75),
    "b": (0.25, 0.1, 0.1, 0.1, 0.4),  # radians
}

LF_HZ, HF_STD_HZ, LF_STD_HZ = 0.1, 0.01, 0.01
RR_FS = 4.0  # Hz, sampling rate of the RR tachogram
BURN_IN_S = 5.0
MV_RANGE = (-0.4, 1.2)


def _as_rng(rng) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or (isinstance(rng, (int, np.integer)) and not isinstance(rng, bool)):
        return np.random.default_rng(rng)
    raise TypeError(f"rng must be a numpy.random.Generator, an int seed or None, got {rng!r}")


def _check_number(name: str, value, *, low: float, high: float = math.inf, low_open=True):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"ecgsyn: {name} must be a number, got {type(value).__name__}")
    value = float(value)
    ok = (value > low if low_open else value >= low) and value < high and math.isfinite(value)
    if not ok:
        lo = "(" if low_open else "["
        raise ValueError(f"ecgsyn: {name} must be in {lo}{low:g}, {high:g}), got {value!r}")
    return value


def check_morphology(morphology: dict | None) -> dict[str, np.ndarray]:
    """The paper's defaults updated by ``morphology`` (keys "theta", "a", "b"; 5 values
    each, in P, Q, R, S, T order; theta and b in radians). Returns float64 arrays."""
    out = {k: np.array(v, dtype=np.float64) for k, v in DEFAULT_MORPHOLOGY.items()}
    if morphology is None:
        return out
    if not isinstance(morphology, dict):
        raise TypeError(f"ecgsyn: morphology must be a dict or None, got {type(morphology)}")
    unknown = set(morphology) - set(out)
    if unknown:
        raise ValueError(
            f"ecgsyn: morphology has unknown keys {sorted(unknown)}; allowed: {sorted(out)}"
        )
    for key, value in morphology.items():
        arr = np.asarray(value, dtype=np.float64)
        if arr.shape != (5,):
            raise ValueError(
                f"ecgsyn: morphology[{key!r}] must have 5 values (P, Q, R, S, T), "
                f"got shape {arr.shape}"
            )
        if not np.isfinite(arr).all():
            raise ValueError(f"ecgsyn: morphology[{key!r}] has non-finite values: {arr}")
        out[key] = arr
    if (out["b"] <= 0).any():
        raise ValueError(f"ecgsyn: morphology['b'] widths must be > 0, got {out['b']}")
    if out["a"][2] <= 0:
        raise ValueError(f"ecgsyn: morphology['a'] of the R wave must be > 0, got {out['a'][2]}")
    return out


def rr_tachogram(
    duration_s: float,
    heart_rate: float,
    heart_rate_std: float,
    lf_hf_ratio: float,
    respiration_hz: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, float]:
    """RR intervals in seconds sampled at :data:`RR_FS` Hz over at least ``duration_s``.

    Returns ``(rr, RR_FS)``; ``rr`` has mean 60/heart_rate s (before clipping to 0.2..3 s)
    and a bimodal spectrum (LF at 0.1 Hz, HF at ``respiration_hz``).
    """
    n = max(256, math.ceil((duration_s + 10.0) * RR_FS))
    freqs = np.fft.rfftfreq(n, d=1.0 / RR_FS)
    hf_power = 1.0 / (1.0 + lf_hf_ratio)
    lf_power = lf_hf_ratio * hf_power
    spectrum = lf_power / math.sqrt(2 * math.pi * LF_STD_HZ**2) * np.exp(
        -((freqs - LF_HZ) ** 2) / (2 * LF_STD_HZ**2)
    ) + hf_power / math.sqrt(2 * math.pi * HF_STD_HZ**2) * np.exp(
        -((freqs - respiration_hz) ** 2) / (2 * HF_STD_HZ**2)
    )
    phases = rng.uniform(0.0, 2 * math.pi, size=freqs.shape)
    coeffs = np.sqrt(spectrum) * np.exp(1j * phases)
    coeffs[0] = 0.0
    series = np.fft.irfft(coeffs, n=n)
    sd = series.std()
    series = series / sd if sd > 0 else series
    rr_mean = 60.0 / heart_rate
    rr_std = 60.0 * heart_rate_std / heart_rate**2
    return np.clip(rr_mean + rr_std * series, 0.2, 3.0), RR_FS


def _beats(rr, rr_fs, t_start, t_end, phase0):
    """Beat onsets (s) and RR (s) of each beat: RR held constant over a beat."""
    onsets, rrs = [], []
    rr_t = np.arange(rr.shape[0]) / rr_fs + t_start
    t = t_start - phase0 * float(np.interp(t_start, rr_t, rr))
    while t < t_end:
        r = float(np.interp(t, rr_t, rr))
        onsets.append(t)
        rrs.append(r)
        t += r
    return np.asarray(onsets), np.asarray(rrs)


def ecgsyn(
    duration_s: float,
    fs: float = 256.0,
    *,
    heart_rate: float = 60.0,
    heart_rate_std: float = 1.0,
    lf_hf_ratio: float = 0.5,
    noise_mv: float = 0.0,
    morphology: dict | None = None,
    respiration_hz: float = 0.25,
    baseline_mv: float = 0.0,
    rng: np.random.Generator | int | None = None,
) -> np.ndarray:
    """A synthetic single-lead ECG from the ECGSYN dynamical model (see module docstring).

    Args:
        duration_s: length in seconds.
        fs: output sampling rate in Hz.
        heart_rate: mean heart rate in beats per minute (20..250).
        heart_rate_std: standard deviation of the heart rate in bpm (>= 0).
        lf_hf_ratio: LF (0.1 Hz, Mayer waves) / HF (respiratory) power of the RR series.
        noise_mv: std of additive white measurement noise in mV.
        morphology: overrides of the P, Q, R, S, T parameters: ``{"theta": 5 angles in
            rad, "a": 5 weights, "b": 5 widths in rad}`` (any subset of keys); the
            defaults are the paper's. Given at 60 bpm; scaled with heart rate.
        respiration_hz: respiration rate in Hz: the HF peak of the RR spectrum and the
            frequency of the baseline wander.
        baseline_mv: amplitude in mV of the respiratory baseline wander in the output.
        rng: Generator, int seed, or None; the same seed gives the same signal.

    Returns:
        (round(duration_s * fs),) float32 in mV; the noise-free ECG spans -0.4..1.2 mV
        with the R peaks at the top.
    """
    duration_s = _check_number("duration_s", duration_s, low=0.0)
    fs = _check_number("fs", fs, low=0.0)
    heart_rate = _check_number("heart_rate", heart_rate, low=20.0, high=250.0, low_open=False)
    heart_rate_std = _check_number("heart_rate_std", heart_rate_std, low=0.0, low_open=False)
    lf_hf_ratio = _check_number("lf_hf_ratio", lf_hf_ratio, low=0.0)
    noise_mv = _check_number("noise_mv", noise_mv, low=0.0, low_open=False)
    respiration_hz = _check_number("respiration_hz", respiration_hz, low=0.0, high=2.0)
    baseline_mv = _check_number("baseline_mv", baseline_mv, low=0.0, low_open=False)
    params = check_morphology(morphology)
    rng = _as_rng(rng)
    n_out = round(duration_s * fs)
    if n_out < 2:
        raise ECGDataError(
            f"ecgsyn: duration_s={duration_s:g} s at fs={fs:g} Hz gives {n_out} samples; need >= 2"
        )

    # Heart-rate scaling of the morphology (paper's implementation).
    h = math.sqrt(heart_rate / 60.0)
    theta_i = params["theta"] * np.array([math.sqrt(h), h, 1.0, h, math.sqrt(h)])
    b_i = params["b"] * h
    a_i = params["a"]

    # Phase theta(t) on the internal grid, from per-beat RR intervals.
    fs_int = max(512.0, 2.0 * fs)
    rr, rr_fs = rr_tachogram(
        duration_s + BURN_IN_S, heart_rate, heart_rate_std, lf_hf_ratio, respiration_hz, rng
    )
    t_end = duration_s + 2.0 / fs
    onsets, rrs = _beats(rr, rr_fs, -BURN_IN_S, t_end, phase0=rng.uniform())
    t_int = -BURN_IN_S + np.arange(math.ceil((t_end + BURN_IN_S) * fs_int) + 1) / fs_int
    beat = np.searchsorted(onsets, t_int, side="right") - 1
    theta = -math.pi + 2.0 * math.pi * (t_int - onsets[beat]) / rrs[beat]

    # Forcing g(theta) = -sum_i a_i dtheta_i exp(-dtheta_i^2 / (2 b_i^2)), then the
    # trapezoidal rule for z' = g - z: an IIR filter.
    g = np.zeros_like(theta)
    for a, b, th in zip(a_i, b_i, theta_i):  # one wave at a time: O(n) memory
        dtheta = np.remainder(theta - th + math.pi, 2 * math.pi) - math.pi
        g -= a * dtheta * np.exp(-(dtheta**2) / (2.0 * b**2))
    step = 1.0 / fs_int
    pole = (1.0 - step / 2) / (1.0 + step / 2)
    gain = (step / 2) / (1.0 + step / 2)
    from scipy import signal as sps  # here: importing ecgfast.data costs no scipy

    z = sps.lfilter([gain, gain], [1.0, -pole], g)

    t_out = np.arange(n_out) / fs
    ecg = np.interp(t_out, t_int, z)
    lo, hi = ecg.min(), ecg.max()
    ecg = (ecg - lo) * ((MV_RANGE[1] - MV_RANGE[0]) / (hi - lo)) + MV_RANGE[0]

    if baseline_mv > 0:
        w = 2 * math.pi * respiration_hz
        ecg += baseline_mv * np.sin(w * t_out - math.atan(w))
    if noise_mv > 0:
        ecg += rng.normal(0.0, noise_mv, size=n_out)
    return ecg.astype(np.float32)
