"""Probing: folds, F1, and that the probe finds signal where there is some."""

import numpy as np
import pytest
import torch

from ecgfast.evaluation import (
    evaluate_encoder,
    extract_features,
    format_table,
    macro_f1,
    make_folds,
    probe_features,
)
from ecgfast.models import ECGEncoder, EncoderConfig


def test_macro_f1_by_hand():
    y = np.array([0, 0, 1, 1, 1])
    p = np.array([0, 1, 1, 1, 0])
    # class 0: tp 1, fp 1, fn 1 -> 0.5; class 1: tp 2, fp 1, fn 1 -> 2/3
    assert macro_f1(y, p) == pytest.approx((0.5 + 2 / 3) / 2)


def test_subject_folds_never_split_a_subject():
    groups = np.repeat(np.arange(7), 5)
    folds = make_folds(len(groups), "subject", groups=groups, n_folds=3)
    assert len(folds) == 3
    assert sorted(np.concatenate(folds).tolist()) == list(range(35))
    for test in folds:
        train = np.setdiff1d(np.arange(35), test)
        assert not set(groups[test]) & set(groups[train])


def test_window_folds_cover_everything_once():
    folds = make_folds(53, "window")
    assert len(folds) == 10
    assert sorted(np.concatenate(folds).tolist()) == list(range(53))


@pytest.mark.parametrize("split,kwargs,match", [
    ("subject", {}, "groups"),
    ("subject", {"groups": np.zeros(10)}, "at least 2 subjects"),
    ("window", {"n_folds": 20}, "at least 20"),
    ("person", {}, "split"),
])
def test_bad_folds(split, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_folds(10, split, **kwargs)


def test_probe_finds_a_planted_signal_and_not_noise():
    rng = np.random.default_rng(0)
    n, d = 240, 16
    groups = np.repeat(np.arange(8), n // 8)
    y = rng.integers(0, 2, n)
    informative = rng.standard_normal((n, d)).astype(np.float32)
    informative[:, 0] += 2.5 * (2 * y - 1)
    noise = rng.standard_normal((n, d)).astype(np.float32)
    good = probe_features(informative, {"arousal": y}, split="subject", groups=groups,
                          epochs=100)["arousal"]
    bad = probe_features(noise, {"arousal": y}, split="subject", groups=groups,
                         epochs=100)["arousal"]
    assert good["accuracy_mean"] > 0.9
    assert bad["accuracy_mean"] < 0.7
    assert good["n_folds"] == 5 and len(good["f1_folds"]) == 5


def test_extract_features_and_evaluate_encoder():
    torch.manual_seed(0)
    enc = ECGEncoder(EncoderConfig(dropout=0.5)).train()
    x = np.random.default_rng(0).standard_normal((12, 200)).astype(np.float32)
    f1 = extract_features(enc, x, batch_size=5)
    f2 = extract_features(enc, x, batch_size=12)
    assert f1.shape == (12, 128)
    np.testing.assert_allclose(f1, f2, rtol=1e-5, atol=1e-5)  # eval mode: no dropout
    assert enc.training  # mode restored
    labels = {"arousal": np.arange(12) % 2, "valence": (np.arange(12) // 2) % 2}
    res = evaluate_encoder(enc, x, labels, split="subject", groups=np.arange(12) // 3, epochs=50)
    assert set(res) == {"arousal", "valence"}
    table = format_table({"random": res})
    assert "arousal acc" in table and "random" in table


def test_multiclass_probe_uses_every_class_of_the_task():
    rng = np.random.default_rng(1)
    n, d = 240, 8
    groups = np.repeat(np.arange(6), n // 6)
    y = rng.integers(0, 4, n)
    x = rng.standard_normal((n, d)).astype(np.float32)
    x[np.arange(n), y] += 4.0  # class c lifts feature c
    res = probe_features(x, {"affect": y}, split="subject", groups=groups, n_folds=3,
                         epochs=100, n_classes={"affect": 5})["affect"]
    assert res["accuracy_mean"] > 0.9
    # class 4 never occurs: macro-F1 over the task's 5 classes counts it as 0
    assert 0.7 < res["f1_mean"] <= 0.8 + 1e-9
    res4 = probe_features(x, {"affect": y}, split="subject", groups=groups, n_folds=3,
                          epochs=100)["affect"]
    assert res4["f1_mean"] > 0.9


def test_probe_width_is_the_tasks_class_count():
    from ecgfast.evaluation import train_probe

    x = np.random.default_rng(0).standard_normal((20, 4)).astype(np.float32)
    probe = train_probe(x, np.arange(20) % 2, epochs=2, n_classes=3)
    assert probe[-1].out_features == 3
    with pytest.raises(ValueError, match="n_classes"):
        train_probe(x, np.arange(20) % 4, epochs=2, n_classes=3)
    with pytest.raises(ValueError, match="class indices"):
        probe_features(x, {"t": np.arange(20) - 1}, split="window", n_folds=2, epochs=2)


def test_binary_results_do_not_change_with_an_explicit_class_count():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((60, 6)).astype(np.float32)
    y = rng.integers(0, 2, 60)
    a = probe_features(x, {"arousal": y}, split="window", epochs=20)
    b = probe_features(x, {"arousal": y}, split="window", epochs=20, n_classes={"arousal": 2})
    assert a == b


def test_format_table_for_any_task_names():
    row = {"accuracy_mean": 0.5, "accuracy_std": 0.1, "f1_mean": 0.25, "f1_std": 0.0}
    table = format_table({"m": {"affect": row, "a_long_task_name": row}})
    head, rule, line = table.splitlines()
    assert "affect acc" in head and "a_long_task_name F1" in head and "arousal" not in head
    assert line.count("50.0 ± 10.0") == 2 and line.count("25.0 ± 0.0") == 2
    assert len(head) == len(rule)
    both = format_table({"m": {"arousal": row}})
    assert "valence acc" in both.splitlines()[0]  # arousal and valence stay together


def test_probe_training_is_single_threaded_and_restores_the_thread_count():
    from ecgfast.evaluation import train_probe

    before = torch.get_num_threads()
    seen = []
    real = torch.optim.Adam.step

    def step(self, *a, **k):
        seen.append(torch.get_num_threads())
        return real(self, *a, **k)

    x = np.random.default_rng(0).standard_normal((20, 4)).astype(np.float32)
    try:
        torch.optim.Adam.step = step
        train_probe(x, np.arange(20) % 2, epochs=3)
    finally:
        torch.optim.Adam.step = real
    assert seen == [1, 1, 1] and torch.get_num_threads() == before


# ------------------------------------------------ linear probe, scores, calibration, intervals


def test_linear_probe_separates_a_separable_case():
    from ecgfast.evaluation import fit_probe, train_linear

    rng = np.random.default_rng(3)
    x = rng.standard_normal((200, 5)).astype(np.float32)
    y = (x[:, 0] - 0.5 * x[:, 3] > 0.1).astype(np.int64)  # a hyperplane
    model = train_linear(x, y, c=1e4)
    assert model.weight.shape == (2, 5)
    with torch.no_grad():
        assert (model(torch.as_tensor(x)).argmax(1).numpy() == y).mean() > 0.98
    w = (model.weight[1] - model.weight[0]).detach().numpy()
    assert abs(w[1]) < 0.1 * abs(w[0]) and w[3] / w[0] == pytest.approx(-0.5, abs=0.1)
    probe = fit_probe(x[:150], y[:150], kind="linear")
    assert (probe(x[150:]) == y[150:]).mean() > 0.95
    assert np.allclose(probe.proba(x[150:]).sum(1), 1.0)
    with pytest.raises(ValueError, match="probe"):
        fit_probe(x, y, kind="svm")


def test_scores_by_hand():
    from ecgfast.evaluation import auroc, balanced_accuracy
    from ecgfast.evaluation.metrics import fold_scores

    y = np.array([0, 0, 0, 1, 1])
    # positives score 0.9 and 0.4; negatives 0.1, 0.4, 0.8: pairs won 3 + 1.5 of 6
    assert auroc(y, np.array([0.1, 0.4, 0.8, 0.9, 0.4])) == pytest.approx(4.5 / 6)
    assert np.isnan(auroc(np.zeros(3, int), np.arange(3.0)))
    assert balanced_accuracy(y, np.array([0, 0, 1, 1, 0])) == pytest.approx((2 / 3 + 1 / 2) / 2)
    proba = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.1, 0.9], [0.6, 0.4]])
    s = fold_scores(y, proba, 2)
    assert s["accuracy"] == pytest.approx(3 / 5) and s["majority_rate"] == pytest.approx(3 / 5)
    assert set(s) == {"accuracy", "f1", "balanced_accuracy", "auroc", "majority_rate"}
    assert "auroc" not in fold_scores(np.array([0, 1, 2]), np.eye(3), 3)


def test_calibration_uses_no_labels(monkeypatch):
    """The features a probe is trained and tested on, under per-subject calibration, do
    not change when the test labels are shuffled; calibration centres every subject."""
    from ecgfast.evaluation import calibrate_within_subject, protocol

    rng = np.random.default_rng(4)
    groups = np.repeat(np.arange(6), 20)
    x = rng.standard_normal((120, 3)).astype(np.float32) + groups[:, None] * 2.0
    x[5, 1] = np.nan
    y = rng.integers(0, 2, 120)
    folds = protocol.make_folds(120, "subject", groups=groups, n_folds=3)
    seen = []
    real = protocol.fit_probe

    def spy(train_x, train_y, **kw):
        fitted = real(train_x, train_y, **kw)
        seen.append(train_x.copy())
        proba = fitted.proba
        fitted.proba = lambda f: (seen.append(f.copy()), proba(f))[1]
        return fitted

    monkeypatch.setattr(protocol, "fit_probe", spy)
    protocol.score_folds(x, {"t": y}, folds, groups=groups, calibration="subject", probe="linear")
    first, seen[:] = list(seen), []
    shuffled = y.copy()
    for test in folds:
        shuffled[test] = rng.permutation(shuffled[test])
    protocol.score_folds(x, {"t": shuffled}, folds, groups=groups, calibration="subject",
                         probe="linear")
    assert len(first) == len(seen) == 6
    for a, b in zip(first, seen):
        np.testing.assert_array_equal(a, b)
    z = calibrate_within_subject(x, groups)
    for s in range(6):
        block = z[groups == s]
        np.testing.assert_allclose(np.nanmean(block, 0), 0, atol=1e-5)
        np.testing.assert_allclose(np.nanstd(block, 0), 1, atol=1e-4)
    assert np.isnan(z[5, 1]) and np.isfinite(np.delete(z, 5, 0)).all()


def test_missing_features_get_the_training_medians():
    from ecgfast.evaluation import fit_probe

    x = np.array([[1.0, np.nan], [3.0, 10.0], [5.0, 30.0], [np.nan, 20.0]], dtype=np.float32)
    probe = fit_probe(x, np.array([0, 1, 0, 1]), kind="linear")
    np.testing.assert_allclose(probe.median, [3.0, 20.0])
    filled = probe.transform(np.array([[np.nan, np.nan]], dtype=np.float32))
    np.testing.assert_allclose(filled * probe.sd + probe.mean, [[3.0, 20.0]], atol=1e-5)


def test_corrected_interval_by_hand():
    from scipy import stats as sps

    from ecgfast.evaluation.stats import corrected_t_interval, paired_difference

    d = [0.1, 0.3, 0.2, 0.0]  # mean 0.15, sd sqrt(0.05 / 3)
    half = sps.t.ppf(0.975, 3) * np.sqrt(0.05 / 3) * np.sqrt(1 / 4 + 0.25)
    r = corrected_t_interval(d, 0.25)
    assert r["mean"] == pytest.approx(0.15) and r["high"] - r["mean"] == pytest.approx(half)
    plain = corrected_t_interval(d, 0.0)
    assert plain["high"] - plain["mean"] == pytest.approx(sps.t.ppf(0.975, 3) * np.sqrt(0.05 / 12))
    assert paired_difference([[0.9, 0.9, 0.9]], [[0.5, 0.6, 0.4]], 0.5)["verdict"] == "ahead"
    assert paired_difference([[0.5, 0.6]], [[0.6, 0.5]], 0.5)["verdict"] == "tied"
    with pytest.raises(ValueError, match="pair"):
        paired_difference([[0.1]], [[0.1, 0.2]], 0.5)
