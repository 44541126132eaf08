"""Resident memory of the full-MNIST datamodule's `setup()`, in a fresh process.

    PYTHONPATH=benchmarks .venv/bin/python benchmarks/probes/memory_probe.py DATA_DIR VAL_SIZE

Run by `bench.part_memory` (which sets PYTHONPATH so `bench` imports). Prints one JSON
line: RSS and peak RSS (MiB) before and after `setup()`, after the imports, and the bytes
of the tensors the datamodule holds (each storage counted once: splits may share one).
"""

import gc
import json
import resource
import sys

import torch
from bench.common import rss_mb

from lenet5.cli.train import compose
from lenet5.training.build import build_datamodule


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    data_dir, val_size = sys.argv[1:3]
    torch.set_num_threads(1)
    cfg = compose(["data=mnist", f"data.root={data_dir}", f"data.val_size={val_size}"])
    dm = build_datamodule(cfg)
    gc.collect()
    before, peak_before = rss_mb(), peak_mb()
    dm.setup()
    gc.collect()
    after, peak_after = rss_mb(), peak_mb()
    seen, held = set(), 0
    for images, labels in dm.splits.values():
        for t in (images, labels):
            s = t.untyped_storage()
            if s.data_ptr() not in seen:
                seen.add(s.data_ptr())
                held += s.nbytes()
    result = {
        "rss_before_setup_mb": before,
        "rss_after_setup_mb": after,
        "peak_before_setup_mb": peak_before,
        "peak_after_setup_mb": peak_after,
        "tensor_bytes_held_mb": held / 2**20,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
