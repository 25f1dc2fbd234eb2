"""A data loader as a samcli data target: `data: {target: examples/own_model/data.py:load, args: {n_train: 256}}`.

samcli calls `load` with the config's `data.args`; it returns (train, test), each a pair of tensors
(inputs, targets) or a torch Dataset of (input, target) pairs: here train is a pair of tensors and
test a TensorDataset, to show both.
"""
import torch
from torch.utils.data import TensorDataset


def bars(n, size, noise, generator):
    """n noisy size x size images of one of four bars (horizontal, vertical, two diagonals), labels 0-3."""
    labels = torch.randint(0, 4, (n,), generator=generator)
    images = noise * torch.randn(n, 1, size, size, generator=generator)
    where = torch.randint(1, size - 1, (n,), generator=generator)
    idx = torch.arange(size)
    for i in range(n):
        k, w = int(labels[i]), int(where[i])
        if k == 0:
            images[i, 0, w, :] += 1.0
        elif k == 1:
            images[i, 0, :, w] += 1.0
        elif k == 2:
            images[i, 0, idx, idx] += 1.0
        else:
            images[i, 0, idx, size - 1 - idx] += 1.0
    return images, labels


def load(n_train=256, n_test=256, size=12, noise=0.5, seed=0):
    """(train, test) of the four-bars task; the seed fixes both splits."""
    generator = torch.Generator().manual_seed(seed)
    train = bars(n_train, size, noise, generator)
    test = TensorDataset(*bars(n_test, size, noise, generator))
    return train, test
