"""Output head choices, each paired with its default loss in `conf/model/head/`.

Every head returns *scores*, one per class, where the largest score is the prediction:
logits for the linear head, and the negated RBF penalties -y_i for the RBF head (the
paper predicts the class with the smallest y_i, sec. II-B).
"""

import torch
from torch import nn

# Stylized 7x12 bitmaps of the digits 0-9 (paper fig. 3), '#' = +1, '.' = -1, read row by
# row into 84 values, as a public re-implementation transcribed fig. 3. They could not be
# checked pixel by pixel against the figure: the blank top rows of 0, 2, 4 and 5 may be a
# transcription artifact (each bitmap is still distinct, which is what the RBF head needs).
_BITMAPS = """
.#####.   ...##..   .#####.   #######   .#####.   .#####.   ..####.   #######   .#####.   .#####.
.......   ..###..   .......   .....##   .......   .......   .##....   .....##   ##...##   ##..###
..###..   .####..   .#####.   ....##.   .......   #######   ##.....   .....##   ##...##   ##...##
.##.##.   ...##..   ##...##   ...##..   .##..##   ##.....   ##.....   ....##.   ##...##   ##...##
##...##   ...##..   #....##   ..####.   .##..##   ##.....   ######.   ...##..   .#####.   ##..###
##...##   ...##..   ....##.   .....##   ###..##   .####..   ###..##   ...##..   ##...##   .######
##...##   ...##..   ..###..   .....##   ##...##   ..####.   ##...##   ..##...   ##...##   .....##
##...##   ...##..   .##....   .....##   ##...##   .....##   ##...##   ..##...   ##...##   .....##
.##.##.   ...##..   ##.....   ##...##   ##..###   ##...##   ###..##   ..##...   ##...##   ....##.
..###..   .######   #######   .#####.   .######   .#####.   .#####.   ..##...   .#####.   .####..
.......   .......   .......   .......   .....##   .......   .......   .......   .......   .......
.......   .......   .......   .......   .....##   .......   .......   .......   .......   .......
"""
BITMAP_WIDTH, BITMAP_HEIGHT = 7, 12


def digit_bitmaps() -> torch.Tensor:
    """The 10 RBF centres, shape (10, 84), values +/-1."""
    rows = [line.split() for line in _BITMAPS.strip().splitlines()]
    return torch.tensor(
        [[1.0 if c == "#" else -1.0 for row in rows for c in row[digit]] for digit in range(10)]
    )


class RBFHead(nn.Module):
    """Euclidean RBF units with fixed +/-1 bitmap centres (sec. II-B, eq. 7).

    y_i = sum_j (x_j - w_ij)^2; the centres are a buffer, not a parameter, so no optimizer
    can move them. Returns -y so that argmax gives the prediction.
    """

    # What its scores are, for the losses that are defined on them (`lenet5.model.loss`).
    scores = "rbf_penalties"
    max_classes = 10  # one bitmap per digit

    @classmethod
    def check(cls, num_classes: int, loss: object = None) -> None:
        """Refuse, before anything is built, a class count or loss this head cannot serve."""
        if not 1 <= num_classes <= cls.max_classes:
            raise ValueError(
                f"model/head=rbf has fixed bitmaps for the {cls.max_classes} digits only, so it "
                f"cannot serve {num_classes} classes: use model/head=softmax, or "
                f"data.num_classes<={cls.max_classes}"
            )
        if loss is not None and getattr(loss, "scores", None) != cls.scores:
            raise ValueError(
                f"model.loss={getattr(loss, '__name__', loss)} does not take the RBF head's "
                "outputs, which are penalties: use model/loss=mle or model/loss=map (the "
                "paper's eq. 8 and 9)"
            )

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        size = BITMAP_WIDTH * BITMAP_HEIGHT
        if in_features != size:
            raise ValueError(
                f"the RBF head needs F6 to have {size} units (one per pixel of the 7x12 "
                f"bitmaps), got {in_features}"
            )
        self.check(out_features)
        self.register_buffer("centres", digit_bitmaps()[:out_features])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # ||x||^2 - 2 x.w + ||w||^2, the expanded form: one matmul instead of a (B, C, 84) tensor.
        penalties = (
            x.pow(2).sum(1, keepdim=True) - 2 * x @ self.centres.T + self.centres.pow(2).sum(1)
        )
        return -penalties
