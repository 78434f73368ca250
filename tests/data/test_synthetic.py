import time
import zipfile

import numpy as np
import pytest

from ecgfast.data import Cohort, ECGDataError, make_cohort


@pytest.fixture(scope="module")
def cohort():
    return make_cohort(n_subjects=4, sessions_per_subject=4, session_seconds=30.0, seed=11)


def test_shapes_dtypes_and_ids(cohort):
    n = 4 * 4 * 3
    assert len(cohort) == n
    assert cohort.windows.shape == (n, 2560) and cohort.windows.dtype == np.float32
    for key in ("subject", "session", "arousal", "valence"):
        arr = getattr(cohort, key)
        assert arr.shape == (n,) and arr.dtype == np.int64
    assert cohort.fs == 256.0
    assert set(np.unique(cohort.subject)) == {0, 1, 2, 3} and cohort.n_subjects == 4
    # Globally unique session ids, each belonging to one subject with one label pair.
    assert np.unique(cohort.session).size == 16
    for s in np.unique(cohort.session):
        m = cohort.session == s
        assert m.sum() == 3
        for key in ("subject", "arousal", "valence"):
            assert np.unique(getattr(cohort, key)[m]).size == 1
    assert np.isfinite(cohort.windows).all()


def test_label_balance_every_subject_gets_all_combinations(cohort):
    for s in range(4):
        m = cohort.subject == s
        pairs = {(a, v) for a, v in zip(cohort.arousal[m], cohort.valence[m])}
        assert pairs == {(0, 0), (0, 1), (1, 0), (1, 1)}
    assert np.bincount(cohort.arousal).tolist() == [24, 24]
    assert np.bincount(cohort.valence).tolist() == [24, 24]


def test_two_sessions_balanced_in_arousal_and_valence():
    c = make_cohort(n_subjects=3, sessions_per_subject=2, session_seconds=10.0, seed=0)
    for s in range(3):
        m = c.subject == s
        assert sorted(c.arousal[m].tolist()) == [0, 1]
        assert sorted(c.valence[m].tolist()) == [0, 1]


def test_windows_are_z_scored_per_subject(cohort):
    for s in range(4):
        w = cohort.windows[cohort.subject == s].astype(np.float64).ravel()
        core = np.sort(w)[int(0.025 * w.size) : int(0.975 * w.size)]
        assert abs(core.mean()) < 0.05
        assert core.std() == pytest.approx(1.0, abs=0.05)


def test_deterministic_for_seed(cohort):
    again = make_cohort(n_subjects=4, sessions_per_subject=4, session_seconds=30.0, seed=11)
    np.testing.assert_array_equal(again.windows, cohort.windows)
    np.testing.assert_array_equal(again.arousal, cohort.arousal)
    other = make_cohort(n_subjects=4, sessions_per_subject=4, session_seconds=30.0, seed=12)
    assert not np.allclose(other.windows, cohort.windows)


def test_high_arousal_raises_heart_rate_for_every_subject(cohort, hr_of):
    hr = np.array([hr_of(w, cohort.fs) for w in cohort.windows])
    assert np.all((hr > 40) & (hr < 130))
    for s in range(4):
        m = cohort.subject == s
        low, high = hr[m & (cohort.arousal == 0)].mean(), hr[m & (cohort.arousal == 1)].mean()
        assert high - low > 4.0, (s, low, high)


def test_subjects_differ_about_as_much_as_arousal(cohort, hr_of):
    hr = np.array([hr_of(w, cohort.fs) for w in cohort.windows])
    low = cohort.arousal == 0
    subject_means = [hr[low & (cohort.subject == s)].mean() for s in range(4)]
    # Baseline heart rates are spread over several bpm between subjects.
    assert np.ptp(subject_means) > 4.0


def test_save_load_round_trip(cohort, tmp_path):
    path = cohort.save(tmp_path / "cohort")
    assert path.suffix == ".npz"
    back = Cohort.load(path)
    for key in ("windows", "subject", "session", "arousal", "valence"):
        np.testing.assert_array_equal(getattr(back, key), getattr(cohort, key))
        assert getattr(back, key).dtype == getattr(cohort, key).dtype
    assert back.fs == cohort.fs


def test_subset(cohort):
    sub = cohort.subset(cohort.subject == 2)
    assert len(sub) == 12 and set(sub.subject.tolist()) == {2}


def test_load_missing_key_names_file(cohort, tmp_path):
    path = tmp_path / "partial.npz"
    np.savez(path, windows=cohort.windows, subject=cohort.subject)
    with pytest.raises(ECGDataError, match=r"partial\.npz.*missing key.*session"):
        Cohort.load(path)


def test_load_wrong_dtype_and_shape(cohort, tmp_path):
    with np.load(cohort.save(tmp_path / "saved.npz"), allow_pickle=False) as saved:
        arrays = dict(saved)
    arousal = arrays["label_0"]  # the first task's labels
    for name, labels, pattern in [("dtype", arousal.astype(np.float64), r"'arousal'.*int64"),
                                  ("shape", arousal[:-1], r"'arousal'"),
                                  ("labels", arousal + 1, r"'arousal' labels must be 0 or 1")]:
        path = tmp_path / f"{name}.npz"
        np.savez(path, **{**arrays, "label_0": labels})
        with pytest.raises(ECGDataError, match=rf"{name}\.npz.*{pattern}"):
            Cohort.load(path)


def test_load_corrupt_and_missing_file(cohort, tmp_path):
    path = cohort.save(tmp_path / "good.npz")
    data = path.read_bytes()
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(data[: len(data) // 2])
    with pytest.raises(ECGDataError, match=r"corrupt\.npz"):
        Cohort.load(corrupt)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file at all")
    with pytest.raises(ECGDataError, match=r"garbage\.npz"):
        Cohort.load(garbage)
    with pytest.raises(ECGDataError, match=r"absent\.npz.*not found"):
        Cohort.load(tmp_path / "absent.npz")
    assert zipfile.is_zipfile(path)


def test_bad_arguments():
    with pytest.raises(ValueError, match="n_subjects"):
        make_cohort(n_subjects=0)
    with pytest.raises(ValueError, match="session_seconds"):
        make_cohort(session_seconds=5.0, window_seconds=10.0)


def test_default_cohort_is_fast():
    t0 = time.perf_counter()
    c = make_cohort()
    elapsed = time.perf_counter() - t0
    assert c.windows.shape == (8 * 4 * 6, 2560)
    assert elapsed < 5.0


def _t_to_r_ratio(w, fs, peaks_of):
    """Mean over beats of the T-wave peak (0.12-0.4 s after R) over the R amplitude."""
    base = np.median(w)
    ratios = [
        (w[p + int(0.12 * fs) : p + int(0.4 * fs)].max() - base) / (w[p] - base)
        for p in peaks_of(w, fs)
        if p + int(0.4 * fs) < w.size
    ]
    return float(np.mean(ratios))


def test_stated_t_wave_effects(cohort, peaks_of):
    t = np.array([_t_to_r_ratio(w, cohort.fs, peaks_of) for w in cohort.windows])
    arousal_ratios, valence_ratios = [], []
    for s in range(4):
        m = cohort.subject == s
        mean = {
            (a, v): t[m & (cohort.arousal == a) & (cohort.valence == v)].mean()
            for a in (0, 1)
            for v in (0, 1)
        }
        for v in (0, 1):
            arousal_ratios.append(mean[1, v] / mean[0, v])
        for a in (0, 1):
            valence_ratios.append(mean[a, 1] / mean[a, 0])
    # High arousal: taller T wave (a_T x 1.15) in every subject; high valence: a_T x 0.9,
    # smaller than the session jitter, so only on average.
    assert min(arousal_ratios) > 1.0
    assert np.mean(arousal_ratios) > 1.08
    assert np.mean(valence_ratios) < 0.98
