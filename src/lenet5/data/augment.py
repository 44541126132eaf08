"""The paper's distortions (sec. III-B, fig. 7), the `augment` group's blocks.

conf/augment/paper.yaml composes them from torchvision's v2 transforms (translation, scaling,
horizontal shearing) and `RandomSqueeze`, the one the library lacks. `lenet5.data` applies
the composed transform to each training image separately, seeded per chunk from the run's
seed.
"""

import torch
import torch.nn.functional as F
from torch import nn


class RandomSqueeze(nn.Module):
    """Squeezing (sec. III-B): compress horizontally by s and elongate vertically by 1/s, or
    the reverse (s > 1), s uniform in `ratio`, about the image centre. One (C, H, W) image."""

    def __init__(self, ratio: tuple[float, float] = (0.9, 1.1)):
        super().__init__()
        self.ratio = tuple(ratio)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        s = torch.empty(()).uniform_(*self.ratio).item()
        # affine_grid maps output to input coordinates: x_in = x_out / s, y_in = y_out * s.
        theta = image.new_tensor([[[1 / s, 0.0, 0.0], [0.0, s, 0.0]]])
        grid = F.affine_grid(theta, [1, *image.shape], align_corners=False)
        return F.grid_sample(image[None], grid, align_corners=False)[0]
