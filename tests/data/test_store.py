"""WindowStore: items, batches, pickling without the data, and every file checked."""

import json
import pickle
import shutil

import numpy as np
import pytest
import torch

from ecgfast.data import ECGDataError, WindowStore
from ecgfast.data.prepare import prepare


def _recordings(folder, n=3, seconds=35.0, leads=3):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    t = np.arange(round(seconds * 256)) / 256
    for i in range(n):
        beat = np.exp(-(((t * (1.0 + 0.1 * i)) % 1.0 - 0.3) ** 2) / 0.001)
        sig = beat[None] * np.arange(1, leads + 1)[:, None] + 0.05 * rng.standard_normal((leads, t.size))
        np.save(folder / f"rec{i}.npy", sig)
    return folder


@pytest.fixture
def store_dir(tmp_path):
    src = _recordings(tmp_path / "src")
    return prepare(sorted(src.glob("*.npy")), tmp_path / "store", fs=256.0, workers=1, shard_windows=4,
                   progress=False)


def test_items_batches_and_index(store_dir):
    store = WindowStore(store_dir)
    assert store.shape == (9, 3, 2560) and store.leads == ("0", "1", "2") and len(store) == 9
    raw = np.concatenate([np.load(store_dir / "shards" / f"shard-{k:05d}.npy") for k in range(3)])
    assert raw.dtype == np.float16 and raw.shape == (9, 3, 2560)
    for i in (0, 4, 8, -1):
        assert torch.equal(store[i], torch.from_numpy(raw[i].astype(np.float32)))
    assert torch.equal(store.get_batch([8, 1, 4]), torch.from_numpy(raw[[8, 1, 4]].astype(np.float32)))
    with pytest.raises(IndexError, match="out of range"):
        store[9]
    np.testing.assert_array_equal(store.window_record, np.repeat([0, 1, 2], 3))
    np.testing.assert_array_equal(store.starts_s, np.tile([0.0, 10.0, 20.0], 3))
    assert store.labels == {} and store.rejected == [] and len(store.records) == 3


def test_pickled_store_carries_no_data_and_loader_workers_agree(store_dir):
    store = WindowStore(store_dir)
    store.get_batch(range(9))  # maps every shard
    blob = pickle.dumps(store)
    assert len(blob) < 8192 < (store_dir / "shards" / "shard-00000.npy").stat().st_size
    again = pickle.loads(blob)
    assert torch.equal(again.get_batch(range(9)), store.get_batch(range(9)))
    batches = [[3, 1], [8, 0, 2], [5]]
    loader = torch.utils.data.DataLoader(store, batch_sampler=batches, num_workers=2,
                                         collate_fn=lambda b: b)
    for got, idx in zip(loader, batches):
        assert torch.equal(got, store.get_batch(idx))


def _edit_manifest(store_dir, **changes):
    path = store_dir / "store.json"
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest))


def test_other_format_version_is_refused(store_dir):
    _edit_manifest(store_dir, version=0)
    with pytest.raises(ECGDataError, match=r"store\.json.*version 0.*prepare the store again"):
        WindowStore(store_dir)


def test_truncated_shard_is_refused(store_dir):
    shard = store_dir / "shards" / "shard-00001.npy"
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(ECGDataError, match=r"shard-00001\.npy: truncated"):
        WindowStore(store_dir)


def test_index_disagreeing_with_the_shards_is_refused(store_dir, tmp_path):
    good = tmp_path / "good"
    shutil.copytree(store_dir, good)
    _edit_manifest(store_dir, n_windows=10)
    with pytest.raises(ECGDataError, match=r"store\.json.*shards hold 9 windows.*n_windows = 10"):
        WindowStore(store_dir)
    shutil.rmtree(store_dir)
    shutil.copytree(good, store_dir)
    np.save(store_dir / "shards" / "shard-00000.npy", np.zeros((4, 2, 2560), np.float16))
    with pytest.raises(ECGDataError, match=r"shard-00000\.npy: holds \(4, 2, 2560\).*index says"):
        WindowStore(store_dir)
    shutil.copy(good / "shards" / "shard-00000.npy", store_dir / "shards" / "shard-00000.npy")
    np.save(store_dir / "index" / "window_record.npy", np.zeros(8, np.int64))
    with pytest.raises(ECGDataError, match=r"window_record\.npy: holds \(8,\)"):
        WindowStore(store_dir)
    shutil.copy(good / "index" / "window_record.npy", store_dir / "index" / "window_record.npy")
    lines = (store_dir / "records.jsonl").read_text().splitlines()
    (store_dir / "records.jsonl").write_text("\n".join(lines[:2]) + "\n")
    with pytest.raises(ECGDataError, match=r"records\.jsonl: 2 lines.*says 3"):
        _ = WindowStore(store_dir).records
    (store_dir / "shards" / "shard-00002.npy").unlink()
    with pytest.raises(ECGDataError, match=r"shard-00002\.npy: missing"):
        WindowStore(store_dir)


@pytest.mark.parametrize("text,match", [("{not json", "not a JSON manifest"),
                                        ('{"format": "other"}', "not an ecgfast window store"),
                                        (None, "not a window store")])
def test_not_a_store(tmp_path, text, match):
    (tmp_path / "s").mkdir()
    if text is not None:
        (tmp_path / "s" / "store.json").write_text(text)
    with pytest.raises(ECGDataError, match=match):
        WindowStore(tmp_path / "s")


def test_bad_shard_sizes_are_refused(store_dir):
    manifest = json.loads((store_dir / "store.json").read_text())
    manifest["shards"][0]["n_windows"] = 3
    manifest["shards"][2]["n_windows"] = 2
    (store_dir / "store.json").write_text(json.dumps(manifest))
    with pytest.raises(ECGDataError, match=r"store\.json: shard 0 holds 3 windows"):
        WindowStore(store_dir)


def test_lead_selection_picks_and_orders_the_stores_leads(store_dir):
    whole = WindowStore(store_dir)
    some = WindowStore(store_dir, leads=["2", "0"])
    assert some.leads == ("2", "0") and some.store_leads == ("0", "1", "2")
    assert some.shape == (9, 2, 2560)
    assert torch.equal(some.get_batch([4, 0]), whole.get_batch([4, 0])[:, [2, 0]])
    assert torch.equal(some[7], whole[7][[2, 0]])
    assert some.fingerprint() != whole.fingerprint()  # other windows: a resume must refuse
    same = WindowStore(store_dir, leads="0,1,2")  # every lead in the store's order
    assert same.leads == whole.leads and same.fingerprint() == whole.fingerprint()
    assert WindowStore(store_dir, leads="all").fingerprint() == whole.fingerprint()
    assert pickle.loads(pickle.dumps(some)).get_batch([1]).shape == (1, 2, 2560)
    with pytest.raises(ECGDataError, match=r"store\.json: the store has no lead\(s\) \['V1'\]; "
                                           r"its leads are \['0', '1', '2'\]"):
        WindowStore(store_dir, leads=["0", "V1"])
    with pytest.raises(ECGDataError, match="twice"):
        WindowStore(store_dir, leads=["1", "1"])
