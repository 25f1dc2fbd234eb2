"""A plain PyTorch training loop that samcli did not run: it saves a state_dict, which
`samcli sharpness --model ... --data ... --weights own_model.pt` then measures.

Run from the repository's root: python examples/own_model/plain_loop.py [OUT.pt]
"""
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from data import load  # noqa: E402
from nets import build  # noqa: E402


def main(out: str = "own_model.pt", steps: int = 60) -> None:
    """Train nets.build on data.load with SGD and momentum, then save the weights to `out`."""
    torch.manual_seed(0)
    (x, y), _ = load()
    model = build(input_shape=tuple(x.shape[1:]), num_outputs=4, width=8)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        index = torch.randint(0, len(x), (32,), generator=generator)
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x[index]), y[index]).backward()
        optimizer.step()
    torch.save(model.state_dict(), out)
    print(f"saved {out}")


if __name__ == "__main__":
    main(*sys.argv[1:2])
