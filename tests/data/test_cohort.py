"""The general labelled Cohort: construction, validation, subset, save/load (both formats)."""

import json
import zipfile

import numpy as np
import pytest

from ecgfast.data import Cohort, ECGDataError, make_cohort, synthetic


def _cohort(n=6, length=32):
    rng = np.random.default_rng(0)
    return Cohort(
        windows=rng.normal(size=(n, length)).astype(np.float32),
        subject=np.repeat(np.arange(n // 2, dtype=np.int64), 2),
        session=np.arange(n, dtype=np.int64),
        fs=256.0,
        labels={
            "affect": np.arange(n, dtype=np.int64) % 4,
            "arousal": np.arange(n, dtype=np.int64) % 2,
        },
        classes={"affect": ("baseline", "stress", "amusement", "meditation"),
                 "arousal": ("low", "high")},
        scores={"arousal": np.linspace(1.0, 5.0, n)},
        provenance={"dataset": "test", "threshold": {"arousal": 3.0}, "dropped": [1, 2]},
    )


def _assert_same(a: Cohort, b: Cohort):
    for key in ("windows", "subject", "session"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
        assert getattr(a, key).dtype == getattr(b, key).dtype
    assert a.fs == b.fs and a.tasks == b.tasks
    for t in a.tasks:
        np.testing.assert_array_equal(a.labels[t], b.labels[t])
        assert b.labels[t].dtype == np.int64
    assert a.classes == b.classes
    assert list(a.scores) == list(b.scores)
    for s in a.scores:
        np.testing.assert_array_equal(a.scores[s], b.scores[s])
        assert b.scores[s].dtype == np.float64
    assert a.provenance == b.provenance


def test_fields_tasks_and_properties():
    c = _cohort()
    assert len(c) == 6 and c.n_subjects == 3
    assert c.tasks == ("affect", "arousal")
    np.testing.assert_array_equal(c.arousal, c.labels["arousal"])
    with pytest.raises(AttributeError, match=r"no 'valence' labels.*\['affect', 'arousal'\]"):
        _ = c.valence


def test_round_trip_every_field(tmp_path):
    c = _cohort()
    path = c.save(tmp_path / "c")
    assert path.name == "c.npz"
    assert [p.name for p in tmp_path.iterdir()] == ["c.npz"]  # no temporary left behind
    back = Cohort.load(path)
    _assert_same(c, back)
    with np.load(path, allow_pickle=False) as data:  # plain arrays, no pickle needed
        meta = json.loads(str(data["meta"]))
    assert meta["tasks"] == ["affect", "arousal"]


def test_round_trip_of_the_synthetic_cohort(tmp_path):
    c = make_cohort(n_subjects=2, sessions_per_subject=2, session_seconds=20.0, seed=3)
    assert c.provenance["dataset"] == "synthetic" and c.tasks == ("arousal", "valence")
    assert c.classes["arousal"] == ("low", "high")
    _assert_same(c, Cohort.load(c.save(tmp_path / "s.npz")))
    assert synthetic.Cohort is Cohort


def test_subset_keeps_labels_scores_and_provenance():
    c = _cohort()
    s = c.subset(c.subject == 1)
    assert len(s) == 2 and s.labels["affect"].tolist() == [2, 3]
    np.testing.assert_array_equal(s.scores["arousal"], c.scores["arousal"][2:4])
    assert s.provenance == c.provenance and s.provenance is not c.provenance


@pytest.mark.parametrize(
    "change, pattern",
    [
        ({"subject": np.zeros(5, np.int64)}, r"'subject'.*shape \(6,\)"),
        ({"labels": {"affect": np.full(6, 4, np.int64)}}, r"'affect' labels must be in 0..3"),
        ({"labels": {"affect": np.zeros(6, np.int32)}}, r"'affect'.*int64"),
        ({"classes": {"arousal": ("low", "high")}}, r"classes\['affect'\]"),
        ({"scores": {"arousal": np.full(6, np.nan)}}, r"scores\['arousal'\].*NaN"),
        ({"scores": {"arousal": np.zeros(6, np.float32)}}, r"scores\['arousal'\].*float64"),
        ({"fs": 0.0}, r"'fs'"),
        ({"provenance": {"x": object()}}, r"'provenance'.*JSON"),
        ({"windows": np.zeros((6, 4), np.float64)}, r"'windows'.*float32"),
    ],
)
def test_validation_names_the_field(change, pattern):
    c = _cohort()
    kwargs = {"windows": c.windows, "subject": c.subject, "session": c.session, "fs": c.fs,
                  "labels": c.labels, "classes": c.classes, "scores": c.scores, "provenance": c.provenance}
    kwargs.update(change)
    with pytest.raises(ECGDataError, match=pattern):
        Cohort(**kwargs)


def test_load_rejects_object_arrays_and_lying_headers(tmp_path):
    c = _cohort()
    path = c.save(tmp_path / "ok.npz")
    # A member whose header claims a huge shape: refused before any allocation.
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    header = members["windows.npy"]
    assert b"(6, 32)" in header[:128]
    grown = header.replace(b"(6, 32)", b"(6, 3200000000)", 1)
    members["windows.npy"] = grown.replace(b" " * 8 + b"\n", b"\n", 1)  # same header length
    bad = tmp_path / "huge.npz"
    with zipfile.ZipFile(bad, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    with pytest.raises(ECGDataError, match=r"huge\.npz.*windows"):
        Cohort.load(bad)
    obj = tmp_path / "obj.npz"
    np.savez(obj, windows=np.array([object()], dtype=object))
    with pytest.raises(ECGDataError, match=r"obj\.npz.*objects"):
        Cohort.load(obj)


def test_load_bad_meta(tmp_path):
    c = _cohort()
    path = c.save(tmp_path / "m.npz")
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["meta"] = np.str_("{not json")
    np.savez(tmp_path / "badjson.npz", **arrays)
    with pytest.raises(ECGDataError, match=r"badjson\.npz.*'meta'.*JSON"):
        Cohort.load(tmp_path / "badjson.npz")
    del arrays["label_1"]
    arrays["meta"] = np.str_(json.dumps({"format": "ecgfast.cohort", "version": 2,
                                         "tasks": ["affect", "arousal"], "classes": {},
                                         "scores": [], "provenance": {}}))
    np.savez(tmp_path / "nolabel.npz", **arrays)
    with pytest.raises(ECGDataError, match=r"nolabel\.npz.*missing key.*label_1"):
        Cohort.load(tmp_path / "nolabel.npz")
