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
