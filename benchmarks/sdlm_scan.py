"""SDLM's curvature, and the first passes of the paper's recipe, for one init and one eta.

    .venv/bin/python benchmarks/sdlm_scan.py --init paper_sqrt --lr 0.0001 --passes 3

Builds `recipe=paper` on full MNIST (all 60,000 for training) with the given `model/init`
and first-pass eta (`optimizer.lr`), then for each pass: re-estimates h on 500 samples as
`lenet5-train` does and prints each parameter tensor's mean and min h next to mu, trains the
pass one sample at a time in a plain loop (the updates of the project's per-sample mode,
without Lightning or MLflow, so nothing is recorded), and prints the mean training loss and
the test error. What benchmarks/results/paper_reproduction.md quotes for the choice of init
and eta comes from this script. About 3 minutes per pass on one CPU core.
"""

import argparse
import os
from pathlib import Path

import torch
from hydra.utils import instantiate

from lenet5.cli.train import compose
from lenet5.data.datamodule import TensorBatches
from lenet5.training.build import build_module

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--init", default="paper_sqrt", help="model/init option")
    p.add_argument("--lr", type=float, default=0.0001, help="eta of the first pass")
    p.add_argument("--passes", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    default_data = os.environ.get("LENET5_DATA_DIR", ROOT.parent / "shared" / "datasets")
    p.add_argument("--data-dir", default=str(default_data))
    args = p.parse_args()

    torch.set_num_threads(1)
    cfg = compose(
        [
            "recipe=paper",
            "data=mnist",
            "data.val_size=0",
            f"data.root={args.data_dir}",
            f"model/init={args.init}",
            f"optimizer.lr={args.lr}",
            f"seed={args.seed}",
        ]
    )
    torch.manual_seed(args.seed)
    dm = instantiate(cfg.data, seed=args.seed)
    dm.setup()
    module = build_module(cfg)
    net, loss_fn = module.model, module.loss
    opt = module.optimizer_factory(net.parameters())
    scheduler = module.scheduler_factory(opt)
    names = {p: n for n, p in net.named_parameters()}
    images, labels = dm.splits["train"]
    test_x, test_y = dm.splits["test"]
    test_x = test_x.float() * dm.normalize[0] + dm.normalize[1]
    print(f"init={args.init} eta={args.lr} mu={cfg.optimizer.mu} seed={args.seed}")
    for epoch in range(args.passes):
        opt.estimate_hessian(net, loss_fn, *dm.train_sample(opt.n_samples, epoch))
        print(f"pass {epoch + 1}: h mean/min per parameter (mu = {cfg.optimizer.mu})")
        for param, name in names.items():
            h = opt.state[param]["h"]
            print(f"  {name:10s} {h.mean():9.2e} {h.min():9.2e}")
        batches = TensorBatches(
            images, labels, 1, dm.normalize, shuffle=True, seed=args.seed, epoch=lambda e=epoch: e
        )
        total, eta = 0.0, opt.param_groups[0]["lr"]
        for x, y in batches:
            loss = loss_fn(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item()
        scheduler.step()
        with torch.no_grad():
            error = (net(test_x).argmax(1) != test_y).float().mean().item()
        print(
            f"pass {epoch + 1}: eta {eta:g}, "
            f"mean train loss {total / len(labels):.3f}, test error {100 * error:.2f}%",
            flush=True,
        )


if __name__ == "__main__":
    main()
