"""The pre-processed cohort cache, the DATASETS registry and the progress bar."""

import os
import time

import numpy as np
import pytest
from dataset_files import write_dreamer, write_wesad

from ecgfast.datasets import DATASETS, DatasetInfo, load_dataset, wesad


def _same(a, b):
    for key in ("windows", "subject", "session"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
    assert a.tasks == b.tasks and a.classes == b.classes and a.provenance == b.provenance
    for t in a.tasks:
        np.testing.assert_array_equal(a.labels[t], b.labels[t])
    for s in a.scores:
        np.testing.assert_array_equal(a.scores[s], b.scores[s])


@pytest.fixture()
def wesad_root(tmp_path):
    return write_wesad(tmp_path / "WESAD")


def test_second_load_reads_the_cache_not_the_files(wesad_root, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = load_dataset("wesad", wesad_root, cache_dir=cache, progress=False)
    files = sorted(p.name for p in cache.iterdir())
    assert len(files) == 1 and files[0].startswith("wesad-") and files[0].endswith(".npz")

    def boom(*args, **kwargs):
        raise AssertionError("the source files were read although the cache is valid")

    monkeypatch.setattr(wesad, "read_subject", boom)
    _same(first, load_dataset("wesad", wesad_root, cache_dir=cache, progress=False))
    # Touching a source file (a new mtime) or changing a parameter misses the cache.
    pkl = wesad_root / "S3" / "S3.pkl"
    st = pkl.stat()
    os.utime(pkl, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(AssertionError, match="source files were read"):
        load_dataset("wesad", wesad_root, cache_dir=cache, progress=False)
    monkeypatch.undo()
    load_dataset("wesad", wesad_root, cache_dir=cache, progress=False, skip_bad=True)
    assert len(list(cache.iterdir())) == 2


def test_cached_load_is_at_least_20x_faster(tmp_path):
    # Three subjects of 840 s at 700 Hz (a real 280 s record three times, all baseline) in
    # the official container: long enough that pre-processing, not fixed per-call costs,
    # decides the first load.
    from dataset_files import py2_pickle, toy_ecg, wesad_dict

    root = tmp_path / "WESAD"
    for s in (2, 3, 4):
        ecg = np.tile(toy_ecg(700, 280, offset_s=3.0 * s), 3)
        (root / f"S{s}").mkdir(parents=True)
        (root / f"S{s}" / f"S{s}.pkl").write_bytes(
            py2_pickle(wesad_dict(2, ecg=ecg, label=np.ones(ecg.size, np.int32))))
    load_dataset("wesad", root, cache_dir=tmp_path / "warm-up", progress=False)  # imports
    # Best of two on both sides (a fresh cache each time for the first load), so that
    # a busy machine slowing one run does not decide the ratio.
    firsts, times = [], []
    for i in range(2):
        cache = tmp_path / f"cache{i}"
        t0 = time.perf_counter()
        first = load_dataset("wesad", root, cache_dir=cache, progress=False)
        firsts.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        again = load_dataset("wesad", root, cache_dir=cache, progress=False)
        times.append(time.perf_counter() - t0)
    _same(first, again)
    assert len(first) == 3 * 84
    assert min(firsts) / min(times) >= 20.0, (firsts, times)


def test_threshold_and_lead_are_part_of_the_key(tmp_path):
    root = write_dreamer(tmp_path / "d" / "DREAMER.mat").parent
    cache = tmp_path / "cache"
    a = load_dataset("dreamer", root, cache_dir=cache, progress=False)
    b = load_dataset("dreamer", root, threshold=2, cache_dir=cache, progress=False)
    c = load_dataset("dreamer", root, lead=1, cache_dir=cache, progress=False)
    assert len(list(cache.iterdir())) == 3
    assert a.provenance["threshold"] == 3.0 and b.provenance["threshold"] == 2.0
    assert not np.array_equal(a.labels["arousal"], b.labels["arousal"])
    assert not np.array_equal(a.windows, c.windows)
    _same(b, load_dataset("dreamer", root, threshold=2.0, cache_dir=cache, progress=False))


def test_unreadable_cache_is_rebuilt_with_a_warning(wesad_root, tmp_path):
    cache = tmp_path / "cache"
    first = load_dataset("wesad", wesad_root, cache_dir=cache, progress=False)
    (path,) = cache.iterdir()
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.warns(UserWarning, match="unreadable cache file"):
        again = load_dataset("wesad", wesad_root, cache_dir=cache, progress=False)
    _same(first, again)
    _same(first, load_dataset("wesad", wesad_root, cache_dir=cache, progress=False))


def test_registry_describes_every_dataset():
    assert list(DATASETS) == ["wesad", "dreamer", "amigos", "swell", "case", "eegmat"]
    expected = {
        "wesad": (("affect", "stress"), None, 1, 700.0),
        "dreamer": (("arousal", "valence", "dominance"), 3.0, 2, 256.0),
        "amigos": (("arousal", "valence", "dominance"), 5.0, 2, 128.0),
        "swell": (("condition", "arousal", "valence"), 5.0, 1, 2048.0),
        "case": (("arousal", "valence"), 5.0, 1, 1000.0),
        "eegmat": (("arithmetic", "count_quality"), None, 1, 500.0),
    }
    for name, info in DATASETS.items():
        assert isinstance(info, DatasetInfo) and info.name == name
        tasks, threshold, n_leads, fs = expected[name]
        assert (info.tasks, info.default_threshold, len(info.leads), info.fs) == (
            tasks, threshold, n_leads, fs)
        assert callable(info.load) and callable(info.source_files)
        assert info.layout.count("\n") >= 2 and info.title
        with pytest.raises(AttributeError):
            info.name = "x"  # frozen


def test_progress_bar_per_subject(wesad_root, capsys):
    load_dataset("wesad", wesad_root, progress=True)
    err = capsys.readouterr().err
    assert "wesad" in err and "3/3" in err and "subject" in err
    load_dataset("wesad", wesad_root, progress=False)
    assert capsys.readouterr().err == ""
