"""One-off passes over the preloaded uint8 images (N, C, H, W), made when the data is loaded,
never per step: the normalization computed for the data, grey or RGB, padded or resized.
Each works in chunks of CHUNK images, so the extra memory stays small whatever the data set.
"""

import torch
import torch.nn.functional as F

from lenet5.core.errors import DataError

# paper: background -0.1, ink 1.175 (sec. III-A); standard: mean 0, std 1 per channel.
NORMALIZATIONS = ("paper", "standard")
FITS = ("pad", "resize")
PAPER_BACKGROUND, PAPER_INK = -0.1, 1.175  # ink - background = 1.275
CHUNK = 8192  # images per step of the one-off passes over the data (bounded extra memory)


def normalization(kind: str, images: torch.Tensor) -> tuple:
    """(scale, shift) that map uint8 pixels of `images` (N, C, H, W), the training images, to
    the network's input, computed for that data:

    - `paper`: background -> -0.1, ink -> 1.175 (sec. III-A), the background being black (0)
      where most pixels are dark, as in the MNIST family's files, else white (255, the paper's
      own dark ink on white); for MNIST exactly the paper's map;
    - `standard`: mean 0 and standard deviation 1 per channel over the training images (for
      MNIST the familiar 0.1307 and 0.3081).
    Floats for one channel; (1, C, 1, 1) tensors for several.
    """
    n = images[:, :1].numel()  # pixels per channel
    if kind == "paper":
        # Dark or light background: ~4,096 images spread over the set tell (10 ms for MNIST,
        # not the 100 ms of all 60,000).
        sample = images[:: max(1, len(images) // 4096)]
        dark = int(sample.sum(dtype=torch.int64)) < 127.5 * sample.numel()
        # 1.275 / 255 and -0.1 as literals: bit for bit the map every earlier run used
        return (1.275 / 255.0, PAPER_BACKGROUND) if dark else (-1.275 / 255.0, PAPER_INK)
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for chunk in images.split(CHUNK):
        c = chunk.to(torch.float64)
        total += c.sum((0, 2, 3))
        squares += c.square().sum((0, 2, 3))
    mean = total / n / 255.0
    std = (squares / n / 255.0**2 - mean.square()).clamp_min(1e-12).sqrt()
    scale, shift = (1.0 / (255.0 * std)).float(), (-mean / std).float()
    if len(scale) == 1:
        return scale.item(), shift.item()
    return scale.view(1, -1, 1, 1), shift.view(1, -1, 1, 1)


def grey_or_rgb(images: torch.Tensor, channels: int) -> torch.Tensor:
    """Grey images stay one channel (served repeated where `channels` is 3); RGB ones turn
    grey (ITU-R 601 luma, torchvision's) where `channels` is 1."""
    stored = images.shape[1]
    if stored == channels or stored == 1:
        return images
    if stored == 3 and channels == 1:
        from torchvision.transforms.v2.functional import rgb_to_grayscale

        return torch.cat([rgb_to_grayscale(c) for c in images.split(CHUNK)])
    raise DataError(
        f"data.channels={channels}, but the images have {stored} channels: set "
        f"data.channels={stored}" + (" (or 1 for grey)" if stored == 3 else "")
    )


def fitted(images: torch.Tensor, size: int, fit: str) -> torch.Tensor:
    """`images` in the size x size field: padded (centred) or resized, as `fit` says."""
    h, w = images.shape[-2:]
    if (h, w) == (size, size):
        return images
    if fit == "resize":
        return torch.cat(
            [
                F.interpolate(c.float(), (size, size), mode="bilinear", antialias=True)
                .round_()
                .clamp_(0, 255)
                .to(torch.uint8)
                for c in images.split(CHUNK)
            ]
        )
    if h > size or w > size:
        raise DataError(
            f"data.size={size} is smaller than the {h}x{w} images: set data.size={max(h, w)} "
            "or data.fit=resize"
        )
    top, left = (size - h) // 2, (size - w) // 2
    return F.pad(images, (left, size - w - left, top, size - h - top))
