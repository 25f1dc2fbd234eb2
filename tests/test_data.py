"""Every data source loads through samcli.data.load_data.

The torchvision sets are exercised with TINY files written here in their real on-disk formats
(idx ubyte, CIFAR pickles, SVHN .mat), read by torchvision's own dataset classes with
download=False, so nothing is fetched from the network.
"""
from __future__ import annotations

import hashlib
import pickle
import struct

import numpy as np
import pytest
import torch

from samcli.config import ConfigError, DataConfig
from samcli.data import TORCHVISION_SETS, augment, load_data


def _md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _assert_channel_standardized(splits, raw_train: np.ndarray, raw_test: np.ndarray) -> None:
    """Per-channel mean 0 / std 1 on train; test normalized with the TRAIN statistics."""
    x = splits.train.inputs
    assert x.dtype == torch.float32
    axes = (0, 2, 3)
    torch.testing.assert_close(x.mean(dim=axes), torch.zeros(x.shape[1]), atol=1e-4, rtol=0)
    torch.testing.assert_close(x.std(dim=axes, unbiased=False), torch.ones(x.shape[1]), atol=1e-3, rtol=0)
    train = raw_train.astype(np.float64) / 255.0
    test = raw_test.astype(np.float64) / 255.0
    mean = train.mean(axis=axes, keepdims=True)
    std = train.std(axis=axes, keepdims=True)
    expected = torch.as_tensor((test - mean) / std, dtype=torch.float32)
    torch.testing.assert_close(splits.test.inputs, expected, atol=1e-4, rtol=1e-4)


def _images(rng, n: int, channels: int, size: int) -> np.ndarray:
    """uint8 images (n, C, H, W) whose channels have clearly different statistics."""
    out = np.empty((n, channels, size, size), dtype=np.uint8)
    for c in range(channels):
        low = 40 * c
        out[:, c] = rng.integers(low, low + 60 + 30 * c, size=(n, size, size))
    return out


# ---- mnist1d ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mnist1d_cache(tmp_path_factory):
    """Generate MNIST-1D once for this module (a couple of seconds) into a private cache dir."""
    cache = tmp_path_factory.mktemp("samcli-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SAMCLI_CACHE", str(cache))
        splits = load_data(DataConfig(name="mnist1d"))
    return cache, splits


def test_mnist1d_shapes_and_standardization(mnist1d_cache):
    cache, splits = mnist1d_cache
    assert (cache / "mnist1d.npz").is_file()
    assert tuple(splits.train.inputs.shape) == (4000, 1, 40)
    assert tuple(splits.test.inputs.shape) == (1000, 1, 40)
    assert splits.num_classes == 10 and splits.input_shape == (1, 40)
    assert splits.train.targets.dtype == torch.long
    assert set(splits.train.targets.unique().tolist()) == set(range(10))
    x = splits.train.inputs
    assert x.dtype == torch.float32
    assert abs(x.mean().item()) < 1e-4 and abs(x.std(unbiased=False).item() - 1) < 1e-3


def test_mnist1d_reuses_cache(mnist1d_cache, monkeypatch):
    cache, first = mnist1d_cache
    monkeypatch.setenv("SAMCLI_CACHE", str(cache))
    import mnist1d.data

    def fail(*args, **kwargs):
        raise AssertionError("mnist1d was regenerated although the cache file exists")
    monkeypatch.setattr(mnist1d.data, "make_dataset", fail)
    before = (cache / "mnist1d.npz").stat().st_mtime_ns
    second = load_data(DataConfig(name="mnist1d"))
    assert (cache / "mnist1d.npz").stat().st_mtime_ns == before
    assert torch.equal(second.train.inputs, first.train.inputs)
    assert torch.equal(second.test.targets, first.test.targets)
    assert not list(cache.glob("*.tmp.npz"))        # no leftover temporary files


# ---- digits ------------------------------------------------------------------------------------

def test_digits_split_and_shape():
    splits = load_data(DataConfig(name="digits"), seed=0)
    assert tuple(splits.train.inputs.shape) == (1437, 1, 8, 8)
    assert tuple(splits.test.inputs.shape) == (360, 1, 8, 8)
    assert splits.num_classes == 10 and splits.input_shape == (1, 8, 8)
    assert splits.train.targets.min() >= 0 and splits.train.targets.max() <= 9
    assert abs(splits.train.inputs.mean().item()) < 1e-4
    # the split does not depend on the run seed
    other = load_data(DataConfig(name="digits"), seed=5)
    assert torch.equal(other.train.inputs, splits.train.inputs)


# ---- synthetic ---------------------------------------------------------------------------------

def test_synthetic_classification_seeded():
    cfg = DataConfig(name="synthetic", n_train=200, n_test=50, dim=6, classes=4)
    a, b, c = load_data(cfg, seed=1), load_data(cfg, seed=1), load_data(cfg, seed=2)
    assert tuple(a.train.inputs.shape) == (200, 6) and tuple(a.test.inputs.shape) == (50, 6)
    assert a.num_classes == 4 and a.input_shape == (6,)
    assert a.train.targets.dtype == torch.long and a.train.targets.max() < 4
    assert torch.equal(a.train.inputs, b.train.inputs) and torch.equal(a.train.targets, b.train.targets)
    assert torch.equal(a.test.targets, b.test.targets)
    assert not torch.equal(a.train.inputs, c.train.inputs)


def test_synthetic_label_noise_flips_labels():
    cfg = DataConfig(name="synthetic", n_train=2000, n_test=10, dim=5, classes=5)
    clean = load_data(cfg, seed=0)
    noisy = load_data(DataConfig(name="synthetic", n_train=2000, n_test=10, dim=5, classes=5,
                                 label_noise=0.5), seed=0)
    assert torch.equal(clean.train.inputs, noisy.train.inputs)     # same inputs, only labels change
    changed = (clean.train.targets != noisy.train.targets).float().mean().item()
    # half are redrawn uniformly, 1/5 of those land on the same class: ~0.4 change
    assert 0.3 < changed < 0.5
    assert noisy.train.targets.min() >= 0 and noisy.train.targets.max() < 5


def test_synthetic_regression():
    cfg = DataConfig(name="synthetic", task="regression", n_train=100, n_test=20, dim=3)
    a, b = load_data(cfg, seed=0), load_data(cfg, seed=0)
    assert a.num_classes == 0
    assert tuple(a.train.targets.shape) == (100, 1) and a.train.targets.is_floating_point()
    assert torch.equal(a.train.targets, b.train.targets)
    assert not torch.equal(a.train.targets, load_data(cfg, seed=1).train.targets)
    noisy = load_data(DataConfig(name="synthetic", task="regression", n_train=100, n_test=20, dim=3,
                                 label_noise=0.1), seed=0)
    assert torch.equal(noisy.train.inputs, a.train.inputs)
    diff = noisy.train.targets - a.train.targets
    assert 0.05 < diff.std().item() < 0.2


# ---- subsets -----------------------------------------------------------------------------------

def test_train_and_test_size_subsets_are_seeded():
    full = load_data(DataConfig(name="digits"))
    cfg = DataConfig(name="digits", train_size=100, test_size=30)
    a, b, c = load_data(cfg, seed=3), load_data(cfg, seed=3), load_data(cfg, seed=4)
    assert len(a.train) == 100 and len(a.test) == 30
    assert torch.equal(a.train.inputs, b.train.inputs) and torch.equal(a.test.targets, b.test.targets)
    assert not torch.equal(a.train.inputs, c.train.inputs)
    # the subset is made of rows of the full set, without repeats
    flat_full = full.train.inputs.flatten(1)
    match = (a.train.inputs.flatten(1)[:, None] == flat_full[None]).all(-1)
    rows = match.float().argmax(1)
    assert match.any(1).all() and len(set(rows.tolist())) == 100
    assert torch.equal(full.train.targets[rows], a.train.targets)


def test_test_with_unused_appends_the_training_examples_left_out():
    """The test set is the test split followed by exactly the training rows the train_size subset does not
    hold, in their original order; the training subset is the one made without the option."""
    base = dict(name="synthetic", n_train=200, n_test=50, dim=5, classes=3)
    full = load_data(DataConfig(**base), seed=7)
    plain = load_data(DataConfig(**base, train_size=60), seed=7)
    held = load_data(DataConfig(**base, train_size=60, test_with_unused=True), seed=7)
    assert torch.equal(held.train.inputs, plain.train.inputs) and torch.equal(held.train.targets, plain.train.targets)
    assert len(held.test) == 50 + 140
    assert torch.equal(held.test.inputs[:50], full.test.inputs) and torch.equal(held.test.targets[:50], full.test.targets)
    # which rows of the full training set each part holds (synthetic Gaussian rows are distinct)
    def rows(part):
        match = (part.inputs[:, None] == full.train.inputs[None]).all(-1)
        assert match.sum(1).eq(1).all()
        return match.float().argmax(1).tolist()
    train_rows, added = rows(plain.train), rows(held.test.take(slice(50, None)))
    assert added == sorted(set(range(200)) - set(train_rows))
    assert torch.equal(held.test.targets[50:], full.train.targets[added])
    # test_size picks its seeded subset from the test split and the added rows together
    small = load_data(DataConfig(**base, train_size=60, test_with_unused=True, test_size=120), seed=7)
    assert len(small.test) == 120 and (small.test.inputs[:, None] == held.test.inputs[None]).all(-1).any(1).all()


def test_test_with_unused_needs_train_size():
    from samcli.config import TrainConfig
    with pytest.raises(ConfigError, match="data.test_with_unused=true .* set data.train_size"):
        TrainConfig.from_dict({"data": {"name": "mnist1d", "test_with_unused": True}})


@pytest.mark.parametrize("key", ["train_size", "test_size"])
def test_subset_larger_than_set_is_a_config_error(key):
    with pytest.raises(ConfigError, match=f"data.{key}=5000 exceeds"):
        load_data(DataConfig(name="digits", **{key: 5000}))


# ---- torchvision sets from tiny real-format files ----------------------------------------------

def _write_idx(path, array: np.ndarray) -> None:
    """idx ubyte file: big-endian magic (0, 0, 0x08 = uint8, ndim), the dims, then the bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_mnist_style_idx_files(tmp_path, name, folder):
    # torchvision 0.29 reads the UNCOMPRESSED files <root>/<Class>/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte;
    # its existence check has no md5 for them, so no patching is needed.
    rng = np.random.default_rng(0)
    train_x, test_x = _images(rng, 12, 1, 28)[:, 0], _images(rng, 5, 1, 28)[:, 0]
    train_y, test_y = rng.integers(0, 10, 12).astype(np.uint8), rng.integers(0, 10, 5).astype(np.uint8)
    raw = tmp_path / folder / "raw"
    _write_idx(raw / "train-images-idx3-ubyte", train_x)
    _write_idx(raw / "train-labels-idx1-ubyte", train_y)
    _write_idx(raw / "t10k-images-idx3-ubyte", test_x)
    _write_idx(raw / "t10k-labels-idx1-ubyte", test_y)

    splits = load_data(DataConfig(name=name, root=str(tmp_path)))
    assert tuple(splits.train.inputs.shape) == (12, 1, 28, 28)
    assert tuple(splits.test.inputs.shape) == (5, 1, 28, 28)
    assert splits.num_classes == 10 and splits.input_shape == (1, 28, 28)
    assert splits.train.targets.tolist() == train_y.tolist()
    assert splits.test.targets.tolist() == test_y.tolist()
    _assert_channel_standardized(splits, train_x[:, None], test_x[:, None])


def _pickle(path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def _accept_our_checksums(monkeypatch, cls, folder) -> None:
    """CIFAR10/100 md5-check every batch and the meta file against the real files' checksums.
    Rather than disabling that check, we point the expected checksums at our tiny files, so
    torchvision's own integrity check still runs (and would still catch a missing file)."""
    monkeypatch.setattr(cls, "train_list", [[f, _md5(folder / f)] for f, _ in cls.train_list])
    monkeypatch.setattr(cls, "test_list", [[f, _md5(folder / f)] for f, _ in cls.test_list])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": _md5(folder / cls.meta["filename"])})


def test_cifar10_pickled_batches(tmp_path, monkeypatch):
    import torchvision.datasets as tvd
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-10-batches-py"
    train_x, train_y = [], []
    for i in range(1, 6):                               # five training batches of 2 images
        x, y = _images(rng, 2, 3, 32), rng.integers(0, 10, 2).tolist()
        _pickle(folder / f"data_batch_{i}", {"batch_label": f"training batch {i} of 5",
                                             "data": x.reshape(2, -1), "labels": y})
        train_x.append(x)
        train_y += y
    test_x, test_y = _images(rng, 3, 3, 32), rng.integers(0, 10, 3).tolist()
    _pickle(folder / "test_batch", {"batch_label": "testing batch 1 of 1", "data": test_x.reshape(3, -1),
                                    "labels": test_y})
    _pickle(folder / "batches.meta", {"label_names": [f"class{i}" for i in range(10)],
                                      "num_cases_per_batch": 2, "num_vis": 3072})
    _accept_our_checksums(monkeypatch, tvd.CIFAR10, folder)

    splits = load_data(DataConfig(name="cifar10", root=str(tmp_path)))
    assert tuple(splits.train.inputs.shape) == (10, 3, 32, 32)
    assert tuple(splits.test.inputs.shape) == (3, 3, 32, 32)
    assert splits.num_classes == 10 and splits.input_shape == (3, 32, 32)
    assert splits.train.targets.tolist() == train_y and splits.test.targets.tolist() == test_y
    _assert_channel_standardized(splits, np.concatenate(train_x), test_x)


def test_cifar100_pickles(tmp_path, monkeypatch):
    import torchvision.datasets as tvd
    rng = np.random.default_rng(2)
    folder = tmp_path / "cifar-100-python"
    train_x, test_x = _images(rng, 6, 3, 32), _images(rng, 4, 3, 32)
    train_y, test_y = [0, 99, 5, 42, 7, 63], [99, 1, 2, 50]
    for name, x, y in (("train", train_x, train_y), ("test", test_x, test_y)):
        _pickle(folder / name, {"data": x.reshape(len(x), -1), "fine_labels": y,
                                "coarse_labels": [v // 5 for v in y]})
    _pickle(folder / "meta", {"fine_label_names": [f"f{i}" for i in range(100)],
                              "coarse_label_names": [f"c{i}" for i in range(20)]})
    _accept_our_checksums(monkeypatch, tvd.CIFAR100, folder)

    splits = load_data(DataConfig(name="cifar100", root=str(tmp_path)))
    assert tuple(splits.train.inputs.shape) == (6, 3, 32, 32)
    assert splits.num_classes == 100
    assert splits.train.targets.tolist() == train_y and splits.test.targets.tolist() == test_y
    _assert_channel_standardized(splits, train_x, test_x)


def test_svhn_mat_files(tmp_path, monkeypatch):
    import scipy.io
    import torchvision.datasets as tvd
    rng = np.random.default_rng(3)
    train_x, test_x = _images(rng, 7, 3, 32), _images(rng, 3, 3, 32)
    train_y, test_y = np.array([10, 1, 2, 3, 10, 9, 5]), np.array([4, 10, 8])   # SVHN labels 0 as 10
    checksums = {}
    for split, x, y in (("train", train_x, train_y), ("test", test_x, test_y)):
        path = tmp_path / f"{split}_32x32.mat"
        # the real layout: X is (H, W, C, N) uint8, y is (N, 1)
        scipy.io.savemat(path, {"X": x.transpose(2, 3, 1, 0), "y": y.reshape(-1, 1).astype(np.uint8)})
        checksums[split] = _md5(path)
    # SVHN md5-checks the .mat file; as for CIFAR, expect our files' checksums instead of disabling it
    monkeypatch.setattr(tvd.SVHN, "split_list", {k: [url, fname, checksums.get(k, md5)]
                                                 for k, (url, fname, md5) in tvd.SVHN.split_list.items()})

    splits = load_data(DataConfig(name="svhn", root=str(tmp_path)))
    assert tuple(splits.train.inputs.shape) == (7, 3, 32, 32)
    assert tuple(splits.test.inputs.shape) == (3, 3, 32, 32)
    assert splits.num_classes == 10 and splits.input_shape == (3, 32, 32)
    assert splits.train.targets.tolist() == [0, 1, 2, 3, 0, 9, 5]
    assert splits.test.targets.tolist() == [4, 0, 8]
    _assert_channel_standardized(splits, train_x, test_x)


@pytest.mark.parametrize("name", sorted(TORCHVISION_SETS))
def test_missing_torchvision_files_give_one_line_config_error(tmp_path, name):
    root = tmp_path / "nothing-here"
    root.mkdir()
    with pytest.raises(ConfigError) as info:
        load_data(DataConfig(name=name, root=str(root)))
    message = str(info.value)
    assert "\n" not in message
    assert str(root.resolve()) in message
    assert "data.download: true" in message
    assert TORCHVISION_SETS[name][2] in message      # which files were expected


# ---- augmentation ------------------------------------------------------------------------------

def test_augment_shape_seeded_and_crop_or_flip():
    images = torch.randn(5, 3, 8, 8)
    out = augment(images, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == images.dtype
    assert torch.equal(out, augment(images, torch.Generator().manual_seed(0)))
    assert not torch.equal(out, augment(images, torch.Generator().manual_seed(1)))
    # every output is an 8x8 window of the reflect-padded image, possibly mirrored
    padded = torch.nn.functional.pad(images, (4, 4, 4, 4), mode="reflect")
    for i in range(len(images)):
        windows = [padded[i, :, dy:dy + 8, dx:dx + 8] for dy in range(9) for dx in range(9)]
        assert any(torch.equal(out[i], w) or torch.equal(out[i], w.flip(-1)) for w in windows)
