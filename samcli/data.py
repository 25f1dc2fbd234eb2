"""Data sets as tensors: every source ends as a train and a test `Batch` held on the device.

Small sets (all this tool's defaults) fit in memory, so batches are drawn by indexing tensors:
no DataLoader, no worker processes. Image sets are normalized per channel with the training
split's statistics; the seed fixes subsets and synthetic draws.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import ConfigError, DataConfig
from .errors import SamcliWarning
from .objective import Batch

TORCHVISION_SETS = {
    # name: (torchvision class name, how the split is selected, help for getting the files)
    "mnist": ("MNIST", "train", "the MNIST/raw/*-ubyte files"),
    "fashion-mnist": ("FashionMNIST", "train", "the FashionMNIST/raw/*-ubyte files"),
    "cifar10": ("CIFAR10", "train", "the cifar-10-batches-py folder"),
    "cifar100": ("CIFAR100", "train", "the cifar-100-python folder"),
    "svhn": ("SVHN", "split", "train_32x32.mat and test_32x32.mat"),
}


@dataclass(frozen=True)
class DataSplits:
    """A data set as loaded: training and test tensors, the number of classes and one input's shape."""
    train: Batch
    test: Batch
    num_classes: int          # 0 for regression
    input_shape: tuple[int, ...]


def load_data(cfg: DataConfig, seed: int = 0) -> DataSplits:
    """Load the configured data set on the CPU as float32 inputs (move with `Batch.to`); a target's
    (data.target: the user's loader) as its loader gives them."""
    if cfg.target is not None:
        from .targets import load_target_data
        train, test, classes = load_target_data(cfg.target, cfg.args)
        splits = DataSplits(train, test, classes, tuple(train.inputs.shape[1:]))
    elif cfg.name == "mnist1d":
        splits = _mnist1d()
    elif cfg.name == "digits":
        splits = _digits(seed)
    elif cfg.name == "synthetic":
        splits = _synthetic(cfg, seed)
    elif cfg.name in TORCHVISION_SETS:
        splits = _torchvision(cfg)
    else:
        raise ConfigError(f"data.name={cfg.name!r} is unknown")
    return _subset(splits, cfg, seed)


# training-set sizes known without loading anything: mnist1d's default arguments make 4,000 training
# examples, and digits keeps 80% of its 1,797 images (see _mnist1d and _digits)
KNOWN_TRAIN_SIZES = {"mnist1d": 4000, "digits": int(0.8 * 1797)}


def train_set_size(cfg: DataConfig) -> int | None:
    """The number of training examples `load_data(cfg)` gives, when it is known without loading; else None."""
    if cfg.train_size is not None:
        return cfg.train_size
    if cfg.target is not None:
        return None
    if cfg.name == "synthetic":
        return cfg.n_train
    return KNOWN_TRAIN_SIZES.get(cfg.name)


# (input shape, outputs) of each built-in set, known without loading it: a checkpoint's parameter count
# is checked against its config's model before any data is read (runs.load_run)
INPUT_SPECS = {"mnist1d": ((1, 40), 10), "digits": ((1, 8, 8), 10), "mnist": ((1, 28, 28), 10),
               "fashion-mnist": ((1, 28, 28), 10), "cifar10": ((3, 32, 32), 10), "cifar100": ((3, 32, 32), 100),
               "svhn": ((3, 32, 32), 10)}


def input_spec(cfg: DataConfig) -> tuple[tuple[int, ...], int] | None:
    """(input shape, number of model outputs) of `load_data(cfg)`, or None when unknown without loading."""
    if cfg.target is not None:
        return None
    if cfg.name == "synthetic":
        return (cfg.dim,), cfg.classes if cfg.task == "classification" else 1
    return INPUT_SPECS.get(cfg.name)


def derived_seed(seed: int, offset: int) -> int:
    """A seed for one use of the run's seed: torch takes seeds below 2**64, so large run seeds wrap
    (small ones give exactly seed + offset, as they always did)."""
    return (seed + offset) % 2 ** 64


def _subset(splits: DataSplits, cfg: DataConfig, seed: int) -> DataSplits:
    """The seeded train_size and test_size subsets; with test_with_unused, the training examples the
    train_size subset leaves out are appended to the test split first (test_size then picks from both)."""
    def split(batch: Batch, size, key: str, salt: int) -> tuple[Batch, Batch]:
        """(the seeded subset of `size` examples, the rest), both in their original order."""
        if size is None:
            return batch, batch.take(slice(0, 0))
        if size > len(batch):
            raise ConfigError(f"data.{key}={size} exceeds the {len(batch)} examples of {cfg.name}; "
                              "lower it or use null")
        generator = torch.Generator().manual_seed(derived_seed(seed * 1000, salt))
        order = torch.randperm(len(batch), generator=generator)
        return batch.take(order[:size].sort().values), batch.take(order[size:].sort().values)
    train, unused = split(splits.train, cfg.train_size, "train_size", 1)
    test = splits.test
    if cfg.test_with_unused:
        test = Batch(torch.cat([test.inputs, unused.inputs]), torch.cat([test.targets, unused.targets]))
    return DataSplits(train, split(test, cfg.test_size, "test_size", 2)[0], splits.num_classes, splits.input_shape)


def _standardize(train: np.ndarray, test: np.ndarray, axes) -> tuple[torch.Tensor, torch.Tensor]:
    mean = train.mean(axis=axes, keepdims=True)
    std = train.std(axis=axes, keepdims=True) + 1e-8
    return (torch.as_tensor((train - mean) / std, dtype=torch.float32),
            torch.as_tensor((test - mean) / std, dtype=torch.float32))


def mnist1d_cache() -> Path:
    """Where the generated MNIST-1D arrays are kept: $SAMCLI_CACHE/mnist1d.npz (default ~/.cache/samcli)."""
    return Path(os.environ.get("SAMCLI_CACHE", Path.home() / ".cache" / "samcli")) / "mnist1d.npz"


class CacheWarning(SamcliWarning):
    """A damaged data cache was replaced, or a fresh one could not be kept."""


# what the package's default arguments make: anything else in the cache is damage, not data
MNIST1D_SHAPES = {"x": (4000, 40), "y": (4000,), "x_test": (1000, 40), "y_test": (1000,)}


def _read_mnist1d_cache(cache: Path) -> tuple[dict | None, str | None]:
    """The cached arrays, or (None, why) when the file is missing, truncated, corrupt or not what
    mnist1d makes (wrong keys, shapes, labels or non-finite signals)."""
    if not cache.is_file():
        return None, None
    try:
        with np.load(cache, allow_pickle=False) as npz:
            raw = {k: np.asarray(npz[k]) for k in MNIST1D_SHAPES}
    except Exception as err:    # zipfile, zlib, numpy and KeyError all mean one thing: unreadable
        return None, f"it cannot be read ({type(err).__name__})"
    for key, shape in MNIST1D_SHAPES.items():
        if raw[key].shape != shape:
            return None, f"{key} has shape {raw[key].shape}, not {shape}"
    if not (np.isfinite(raw["x"]).all() and np.isfinite(raw["x_test"]).all()):
        return None, "its signals are not finite"
    if any(not np.issubdtype(raw[k].dtype, np.integer) or raw[k].min() < 0 or raw[k].max() > 9
           for k in ("y", "y_test")):
        return None, "its labels are not digits 0-9"
    return raw, None


def _mnist1d() -> DataSplits:
    """MNIST-1D (Greydanus 2020), generated locally; cached because generation takes seconds.
    A damaged cache is regenerated (with a warning), since the data are a pure function of the
    package's seeded defaults; only when that fails is it one line naming the cache."""
    import warnings
    cache = mnist1d_cache()
    raw, damage = _read_mnist1d_cache(cache)
    if raw is None:
        if damage:
            warnings.warn(f"the mnist1d cache {cache} is damaged ({damage}); regenerating it", CacheWarning,
                          stacklevel=3)
        raw = _make_mnist1d(cache, damage)
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(f".{os.getpid()}.tmp.npz")
            np.savez(tmp, **raw)
            os.replace(tmp, cache)
        except OSError as err:   # the data are in memory; only the next run pays for generating them again
            warnings.warn(f"cannot write the mnist1d cache {cache} ({err.strerror or err}); "
                          "set SAMCLI_CACHE to a writable directory", CacheWarning, stacklevel=3)
    x, x_test = _standardize(raw["x"], raw["x_test"], axes=None)
    # one-channel signals (n, 1, 40): model cnn builds a 1-D conv net on them; mlp flattens them
    return DataSplits(Batch(x[:, None], torch.as_tensor(raw["y"], dtype=torch.long)),
                      Batch(x_test[:, None], torch.as_tensor(raw["y_test"], dtype=torch.long)), 10, (1, 40))


def _make_mnist1d(cache: Path, damage: str | None) -> dict:
    import warnings
    try:
        with warnings.catch_warnings():   # mnist1d's import triggers a torch.jit deprecation warning
            warnings.simplefilter("ignore")
            from mnist1d.data import get_dataset_args, make_dataset
        made = make_dataset(get_dataset_args())   # the package's default, seeded arguments
    except Exception as err:
        state = f"is damaged ({damage})" if damage else "is missing"
        raise ConfigError(f"the mnist1d cache {cache} {state} and cannot be regenerated ({type(err).__name__}: "
                          f"{err}); pip install mnist1d, or put a good mnist1d.npz in $SAMCLI_CACHE") from None
    return {k: np.asarray(made[k]) for k in MNIST1D_SHAPES}


def _digits(seed: int) -> DataSplits:
    """scikit-learn's bundled 8x8 digits (1,797 real images), split 80/20 with a fixed shuffle."""
    from sklearn.datasets import load_digits
    bunch = load_digits()
    images = bunch.images.astype(np.float64)[:, None]        # (n, 1, 8, 8)
    order = np.random.default_rng(12345).permutation(len(images))  # split independent of run seed
    cut = int(0.8 * len(images))
    train_idx, test_idx = order[:cut], order[cut:]
    x, x_test = _standardize(images[train_idx], images[test_idx], axes=None)
    y = torch.as_tensor(bunch.target, dtype=torch.long)
    return DataSplits(Batch(x, y[train_idx]), Batch(x_test, y[test_idx]), 10, (1, 8, 8))


def _synthetic(cfg: DataConfig, seed: int) -> DataSplits:
    """Teacher-student: a random two-layer tanh teacher labels Gaussian inputs."""
    generator = torch.Generator().manual_seed(derived_seed(seed, 10_000))
    n = cfg.n_train + cfg.n_test
    inputs = torch.randn(n, cfg.dim, generator=generator)
    width = 4 * cfg.dim
    w1 = torch.randn(cfg.dim, width, generator=generator) / cfg.dim ** 0.5
    out = cfg.classes if cfg.task == "classification" else 1
    w2 = torch.randn(width, out, generator=generator) / width ** 0.5
    scores = torch.tanh(inputs @ w1) @ w2
    if cfg.task == "classification":
        targets = scores.argmax(1)
        flip = torch.rand(n, generator=generator) < cfg.label_noise
        targets[flip] = torch.randint(cfg.classes, (int(flip.sum()),), generator=generator)
        classes = cfg.classes
    else:
        targets = scores + cfg.label_noise * torch.randn(n, 1, generator=generator)
        classes = 0
    train = Batch(inputs[:cfg.n_train], targets[:cfg.n_train])
    test = Batch(inputs[cfg.n_train:], targets[cfg.n_train:])
    return DataSplits(train, test, classes, (cfg.dim,))


def _torchvision(cfg: DataConfig) -> DataSplits:
    import torchvision.datasets as tvd
    class_name, split_kind, files = TORCHVISION_SETS[cfg.name]
    root = Path(cfg.root or os.environ.get("SAMCLI_DATA", "data")).expanduser()
    cls = getattr(tvd, class_name)
    arrays = {}
    for train in (True, False):
        split = {"train": train} if split_kind == "train" else {"split": "train" if train else "test"}
        try:
            ds = cls(str(root), download=cfg.download, **split)
        except (RuntimeError, FileNotFoundError, OSError) as err:
            hint = "set data.download: true to fetch it" if not cfg.download else f"download failed ({err})"
            raise ConfigError(f"data set {cfg.name} not found under {root.resolve()} (expected {files}); "
                              f"put the files there, point data.root at them, or {hint}") from None
        images = np.asarray(ds.data)
        labels = np.asarray(getattr(ds, "targets", None) if hasattr(ds, "targets") else ds.labels)
        if images.ndim == 3:                      # (n, H, W) grey images
            images = images[:, None]
        elif images.shape[-1] == 3:               # CIFAR stores (n, H, W, C)
            images = images.transpose(0, 3, 1, 2)
        arrays[train] = (images.astype(np.float32) / 255.0, labels.astype(np.int64))
    (x, y), (x_test, y_test) = arrays[True], arrays[False]
    x_t, x_test_t = _standardize(x, x_test, axes=(0, 2, 3))   # per-channel statistics
    num_classes = 100 if cfg.name == "cifar100" else 10
    return DataSplits(Batch(x_t, torch.as_tensor(y)), Batch(x_test_t, torch.as_tensor(y_test)),
                      num_classes, tuple(x.shape[1:]))


def augment(inputs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random crop (pad 4) and horizontal flip, per example, on a batch of images."""
    n, _, h, w = inputs.shape
    padded = torch.nn.functional.pad(inputs, (4, 4, 4, 4), mode="reflect")
    dx = torch.randint(0, 9, (n,), generator=generator).tolist()
    dy = torch.randint(0, 9, (n,), generator=generator).tolist()
    flip = (torch.rand(n, generator=generator) < 0.5).to(inputs.device)
    out = torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
    out[flip] = out[flip].flip(-1)
    return out
