"""A run's pictures (`lenet5.cli.record` logs them under `pictures/`): the test confusion matrix, the
misclassified test digits with their predicted and true labels, the learning curves, C1's
learned filters and, for the RBF head, its fixed 7x12 prototypes.

Figures are drawn on matplotlib's Agg canvas without pyplot (no global backend state).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from lenet5.core.names import TRAIN_LOSS, VAL_ACC, VAL_LOSS
from lenet5.model.head import BITMAP_HEIGHT, BITMAP_WIDTH

CURVES = ((TRAIN_LOSS, VAL_LOSS), (VAL_ACC,))


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def mosaic(images: torch.Tensor, cols: int, pad: int = 2) -> torch.Tensor:
    """(N, H, W) images tiled into one (rows*(H+pad), cols*(W+pad)) array, NaN between them:
    one image to draw instead of N axes (drawing 36 axes costs about a second)."""
    n, h, w = images.shape
    rows = max(1, math.ceil(n / cols))
    out = torch.full((rows * (h + pad), cols * (w + pad)), float("nan"))
    for k, image in enumerate(images):
        r, c = divmod(k, cols)
        out[r * (h + pad) : r * (h + pad) + h, c * (w + pad) : c * (w + pad) + w] = image
    return out


def confusion_matrix(path: Path, confusion: torch.Tensor, title: str) -> None:
    counts = confusion.numpy()
    n = counts.shape[0]
    fig = _figure(1.2 + 0.42 * n, 1.0 + 0.42 * n)
    ax = fig.add_axes((0.14, 0.1, 0.84, 0.8))
    ax.imshow(counts, cmap="Blues")
    big = counts.max() / 2 if counts.size else 0
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if counts[i, j]:
                    ax.text(
                        j, i, int(counts[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if counts[i, j] > big else "black",
                    )  # fmt: skip
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_title(title, fontsize=9)
    fig.savefig(path, dpi=90)


def misclassified(path: Path, samples: list, title: str) -> None:
    """The digits in one mosaic, each captioned `predicted/true` above it."""
    cols = 6
    rows = max(1, math.ceil(len(samples) / cols))
    fig = _figure(1.1 * cols, 1.25 * rows + 0.5)
    ax = fig.add_axes((0.01, 0.01, 0.98, 1 - 0.5 / (1.25 * rows + 0.5)))
    ax.set_axis_off()
    if samples:
        grey = torch.stack([image.float().mean(0) for image, _, _ in samples])
        size, pad = grey.shape[-1], 12
        ax.imshow(mosaic(grey, cols, pad).numpy(), cmap="gray_r", interpolation="nearest")
        for k, (_, predicted, true) in enumerate(samples):
            r, c = divmod(k, cols)
            ax.text(
                c * (size + pad) + size / 2, r * (size + pad) - 1, f"{predicted} (true {true})",
                ha="center", va="bottom", fontsize=7, color="tab:red",
            )  # fmt: skip
        ax.set_ylim(rows * (size + pad), -pad)
    else:
        ax.text(0.5, 0.5, "no misclassified test digit", ha="center", va="center")
    fig.suptitle(f"{title}: predicted (true)", fontsize=9)
    fig.savefig(path, dpi=90)


def learning_curves(path: Path, histories: dict[str, list], title: str) -> None:
    fig = _figure(8, 3)
    axes = fig.subplots(1, len(CURVES), squeeze=False)[0]
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.17, top=0.85, wspace=0.25)
    for ax, keys in zip(axes, CURVES, strict=True):
        for key in keys:
            points = sorted((m.step, m.value) for m in histories.get(key, []))
            if points:
                steps, values = zip(*points, strict=True)
                ax.plot(steps, values, marker="o" if len(points) < 20 else None, ms=3, label=key)
        ax.set_xlabel("update")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.savefig(path, dpi=90)


def bitmaps(path: Path, images: torch.Tensor, cols: int, title: str) -> None:
    """Small images side by side in one mosaic (C1's 5x5 filters, the RBF's 7x12 prototypes),
    numbered in reading order; red positive, blue negative."""
    n, h, w = images.shape
    rows = math.ceil(n / cols)
    fig = _figure(0.7 * cols * (w + 1) / 6 + 0.4, 0.7 * rows * (h + 1) / 6 + 0.5)
    ax = fig.add_axes((0.02, 0.02, 0.96, 0.85))
    ax.set_axis_off()
    limit = float(images.abs().max()) or 1.0
    ax.imshow(
        mosaic(images, cols, 1).numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit,
        interpolation="nearest",
    )  # fmt: skip
    fig.suptitle(title, fontsize=9)
    fig.savefig(path, dpi=90)


def draw_all(folder: Path, module, histories: dict[str, list], name: str) -> list[Path]:
    """Every picture of a tested module into `folder`; returns the files written."""
    return draw_tested(folder, module, name) + draw_fitted(folder, module, histories, name)


def draw_tested(folder: Path, module, name: str) -> list[Path]:
    """The pictures the test decides: its confusion matrix and misclassified digits, and C1's
    filters of the weights it tested (the best checkpoint's)."""
    written = []
    if module.confusion is not None:
        written.append(folder / "confusion_matrix.png")
        confusion_matrix(written[-1], module.confusion, f"{name}: test confusion matrix")
    written.append(folder / "misclassified.png")
    misclassified(written[-1], module.misclassified, f"{name}: misclassified test digits")
    c1 = getattr(module.model, "c1", None)
    if c1 is not None:
        w = c1.weight.detach().cpu()  # (6, in, 5, 5): one picture per (filter, channel 0)
        written.append(folder / "c1_filters.png")
        bitmaps(written[-1], w[:, 0], 6, f"{name}: C1's 6 learned 5x5 filters")
    return written


def draw_fitted(folder: Path, module, histories: dict[str, list], name: str) -> list[Path]:
    """The pictures fitting alone decides, which can be drawn before the test: the learning
    curves and, for the RBF head, its fixed prototypes."""
    written = [folder / "learning_curves.png"]
    learning_curves(written[-1], histories, f"{name}: learning curves")
    centres = getattr(getattr(module.model, "head", None), "centres", None)
    if centres is not None:
        protos = centres.detach().cpu().reshape(-1, BITMAP_HEIGHT, BITMAP_WIDTH)
        written.append(folder / "rbf_prototypes.png")
        bitmaps(written[-1], protos, 10, "the RBF head's fixed 7x12 prototypes, 0-9")
    return written
