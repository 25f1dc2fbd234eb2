"""A plain PyTorch loop of your own, with samcli.optim.SAM for the SAM runs, samcli.measure_sharpness on
the trained module and samcli.RunWriter writing each run as a samcli run directory, which
`samcli compare --runs` then measures and tabulates (SGD against SAM, two seeds each).

The model and data are examples/own_model's (nets.py, data.py); the config names them as targets, so
each run's checkpoint rebuilds the model. Run from the repository's root:

    python examples/own_loop/loop.py results/runs/own-loop
    samcli compare --runs results/runs/own-loop/* --out results/studies/own-loop
"""
import sys
from pathlib import Path

import torch
from torch import nn

import samcli

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "own_model"))
from data import load  # noqa: E402
from nets import build  # noqa: E402

DATA = {"target": "examples/own_model/data.py:load", "args": {"n_train": 256, "n_test": 256}}
MODEL = {"target": "examples/own_model/nets.py:build", "args": {"width": 8}}


def accuracy_and_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of the model in eval mode."""
    model.eval()
    with torch.no_grad():
        out = model(x)
    model.train()
    return float((out.argmax(1) == y).float().mean()), float(nn.functional.cross_entropy(out, y))


def train_one(out: str, method: str, seed: int, steps: int = 150, eval_every: int = 50,
              lr: float = 0.1, rho: float = 0.05, batch_size: int = 32) -> Path:
    """Train build(width=8) on load() with `method` (sgd or sam) in a plain loop; RunWriter writes `out`."""
    config = {"seed": seed, "device": "cpu", "steps": steps, "eval_every": eval_every, "model": MODEL, "data": DATA,
              "optimizer": {"method": method, "lr": lr, "momentum": 0.9, "batch_size": batch_size, "rho": rho}}
    (x, y), test = load(**DATA["args"])
    x_test, y_test = test.tensors
    torch.manual_seed(seed)
    model = build(input_shape=tuple(x.shape[1:]), num_outputs=4, **MODEL["args"])
    if method == "sam":
        optimizer = samcli.optim.SAM(model.parameters(), torch.optim.SGD, rho=rho, model=model, lr=lr, momentum=0.9)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    generator = torch.Generator().manual_seed(seed)
    with samcli.RunWriter(out, config, model, label=method.upper(), overwrite=True) as run:
        for step in range(1, steps + 1):
            index = torch.randint(0, len(x), (batch_size,), generator=generator)

            def closure(index=index):
                loss = nn.functional.cross_entropy(model(x[index]), y[index])
                loss.backward()
                return loss
            optimizer.zero_grad()
            closure()                           # the gradient at the weights
            if method == "sam":
                optimizer.step(closure)         # to the perturbed weights, closure's gradient there, back, step
            else:
                optimizer.step()
            if step % eval_every == 0 or step == steps:
                train_acc, train_loss = accuracy_and_loss(model, x, y)
                test_acc, test_loss = accuracy_and_loss(model, x_test, y_test)
                run.log(step, epoch=step * batch_size / len(x), train_loss=train_loss, train_accuracy=train_acc,
                        test_loss=test_loss, test_accuracy=test_acc)
    report = samcli.measure_sharpness(model, (x, y), notions=("worst",), rho=rho)
    print(f"{out}: {method} seed {seed}: test accuracy {test_acc:.3f}, lambda_1 {report.summary()['lambda_1']:.4g}")
    return Path(out)


def main(out_dir: str = "results/runs/own-loop", steps: int = 150) -> list[Path]:
    """SGD and SAM, seeds 0 and 1: four run directories under `out_dir`."""
    return [train_one(f"{out_dir}/{method}-{seed}", method, seed, steps=steps)
            for method in ("sgd", "sam") for seed in (0, 1)]


if __name__ == "__main__":
    main(*sys.argv[1:2])
