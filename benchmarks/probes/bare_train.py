"""A bare PyTorch loop doing the work of `lenet5-train model=modern data=mnist
data.batch_size=64 trainer.max_epochs=E`, with only its own imports (torch, numpy): the
baseline of `benchmarks/throughput.py --parts process`.

    python benchmarks/probes/bare_train.py DATA_DIR EPOCHS [BATCH [THREADS]]

The same work: full MNIST read from DATA_DIR/MNIST/raw (idx files), 28x28 digits centred
in 32x32 and scaled as `normalize: paper` does (background -0.1, ink 1.175), 5,000 training
digits held out for validation, LeNet-5 as `model=modern` builds it (conv 6, 16, 120 of
5x5, ReLU, 2x2 max pooling, F6 84, a linear head of 10), Adam lr 1e-3, the training digits
reshuffled each epoch, the validation set scored after each epoch (batches of 1,000) and
the weights saved when it improves, then the 10,000 test digits scored with the best
weights. Prints the test error.
"""

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

INK, BACKGROUND = 1.175, -0.1  # normalize: paper


def idx(path: Path, offset: int, shape) -> torch.Tensor:
    return torch.from_numpy(np.fromfile(path, dtype=np.uint8, offset=offset).reshape(shape))


def load(root: Path):
    raw = root / "MNIST" / "raw"
    pad = torch.nn.functional.pad
    train_x = pad(idx(raw / "train-images-idx3-ubyte", 16, (-1, 1, 28, 28)), (2, 2, 2, 2))
    test_x = pad(idx(raw / "t10k-images-idx3-ubyte", 16, (-1, 1, 28, 28)), (2, 2, 2, 2))
    train_y = idx(raw / "train-labels-idx1-ubyte", 8, (-1,)).long()
    test_y = idx(raw / "t10k-labels-idx1-ubyte", 8, (-1,)).long()
    return train_x, train_y, test_x, test_y


def normalized(x: torch.Tensor) -> torch.Tensor:
    return x.float().mul_((INK - BACKGROUND) / 255).add_(BACKGROUND)


def lenet5() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 120, 5), nn.ReLU(), nn.Flatten(),
        nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10),
    )  # fmt: skip


@torch.no_grad()
def error(model, x, y, batch=1000) -> float:
    model.eval()
    wrong = sum(
        int((model(normalized(x[i : i + batch])).argmax(1) != y[i : i + batch]).sum())
        for i in range(0, len(y), batch)
    )
    model.train()
    return wrong / len(y)


def main() -> None:
    root, epochs = Path(sys.argv[1]), int(sys.argv[2])
    batch = int(sys.argv[3]) if len(sys.argv) > 3 else 64
    if len(sys.argv) > 4:  # as lenet5-train's threads=N (none: torch's default)
        torch.set_num_threads(int(sys.argv[4]))
    torch.manual_seed(0)
    train_x, train_y, test_x, test_y = load(root)
    perm = torch.randperm(len(train_y), generator=torch.Generator().manual_seed(0))
    val, fit = perm[:5000], perm[5000:]
    val_x, val_y, fit_x, fit_y = train_x[val], train_y[val], train_x[fit], train_y[fit]
    model, loss_fn = lenet5(), nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    best, saved = float("inf"), Path(tempfile.mkdtemp(prefix="bare-")) / "best.pt"
    for _ in range(epochs):
        order = torch.randperm(len(fit_y))
        for i in range(0, len(order), batch):
            j = order[i : i + batch]
            loss = loss_fn(model(normalized(fit_x[j])), fit_y[j])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        val_error = error(model, val_x, val_y)
        if val_error < best:
            best = val_error
            torch.save(model.state_dict(), saved)
    model.load_state_dict(torch.load(saved))
    print(f"test error {error(model, test_x, test_y):.4f}")


if __name__ == "__main__":
    main()
