"""`lenet5-predict`: classify digit images with the MLflow model a run logged
(`lenet5.cli.record.log_model`).

    lenet5-predict digit.png --run <run id>
    lenet5-predict a.png b.jpg --model lenet5-one_at_a_time      # a registered model (latest)
    lenet5-predict t10k-images-idx3-ubyte --run <run id> --limit 20

Images of any size, drawn by hand (dark ink on a light background) or MNIST-like (light on
dark), are brought to the training data's form: grey, ink bright, a 28x28 MNIST-sized image
as it is, any other cropped to its ink, scaled to fit 20x20 and centred in 28x28 (as MNIST
was made), then padded or resized as the model's data was, and normalized the same way.
"""

from __future__ import annotations

import argparse
import gzip
import logging
import os
import struct
import sys
from pathlib import Path

import numpy as np

from lenet5.core.names import MODEL_NAME
from lenet5.core.paths import tracking_uri
from lenet5.core.process import environ

log = logging.getLogger("lenet5")
# MLflow, torch and PIL are imported where they are used: a bad argument answers at once.


class PredictError(RuntimeError):
    """A file or model that cannot be used; the message says which and why."""


# --- reading images ------------------------------------------------------------------------


def read_idx(path: Path) -> np.ndarray:
    """The images of an IDX file (idx3-ubyte, optionally gzipped): (N, H, W) uint8."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        head = f.read(4)
        if len(head) < 4 or head[:2] != b"\0\0" or head[2] != 0x08 or head[3] not in (2, 3):
            raise PredictError(f"{path} is not an IDX image file (magic {head.hex() or 'empty'})")
        dims = struct.unpack(f">{head[3]}I", f.read(4 * head[3]))
        data = np.frombuffer(f.read(), np.uint8)
    if head[3] == 2:
        dims = (1, *dims)
    if data.size != int(np.prod(dims)):
        raise PredictError(f"{path}: IDX header says {dims}, the file holds {data.size} bytes")
    return data.reshape(dims)


def read_image(path: Path) -> np.ndarray:
    """A PNG/JPEG (or any image PIL reads) as a grey (H, W) uint8 array, ink bright."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("RGBA", "LA") or "transparency" in im.info:
                im = im.convert("RGBA")
                background = Image.new("RGBA", im.size, (255, 255, 255, 255))
                im = Image.alpha_composite(background, im)  # drawn on a transparent canvas
            grey = np.asarray(im.convert("L"), np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise PredictError(
            f"{path} is not an image lenet5-predict can read (PNG, JPEG): {e}"
        ) from e
    if grey.mean() > 127:  # dark ink on a light background: MNIST's ink is bright
        grey = 255 - grey
    return grey


def to_mnist(grey: np.ndarray) -> np.ndarray:
    """A digit image as MNIST's 28x28: as it is if 28x28, else cropped to its ink, scaled to
    fit 20x20 and centred by its centre of mass."""
    from PIL import Image

    if grey.shape == (28, 28):
        return grey
    ink = np.argwhere(grey > 40)
    if len(ink) == 0:
        return np.zeros((28, 28), np.uint8)
    (top, left), (bottom, right) = ink.min(0), ink.max(0) + 1
    crop = grey[top:bottom, left:right]
    h, w = crop.shape
    factor = 20 / max(h, w)
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    small = np.asarray(Image.fromarray(crop).resize(size, Image.LANCZOS), np.float64)
    out = np.zeros((28, 28))
    cy, cx = np.array(np.nonzero(small > 0)).mean(1) if small.any() else (size[1] / 2, size[0] / 2)
    y0 = int(np.clip(round(14 - cy), 0, 28 - size[1]))
    x0 = int(np.clip(round(14 - cx), 0, 28 - size[0]))
    out[y0 : y0 + size[1], x0 : x0 + size[0]] = small
    return out.clip(0, 255).astype(np.uint8)


def to_input(images: np.ndarray, prep: dict) -> np.ndarray:
    """(N, 28, 28) uint8 digits -> the network's (N, C, size, size) float32 input."""
    import torch

    from lenet5.data.pixels import fitted

    x = torch.from_numpy(np.array(images, np.uint8)).unsqueeze(1)
    x = fitted(x, prep["size"], prep["fit"]).float()
    scale = (
        torch.tensor(prep["scale"]).reshape(-1, 1, 1) if np.ndim(prep["scale"]) else prep["scale"]
    )
    shift = (
        torch.tensor(prep["shift"]).reshape(-1, 1, 1) if np.ndim(prep["shift"]) else prep["shift"]
    )
    x = x.expand(-1, prep["channels"], -1, -1) * scale + shift
    return x.float().numpy()


# --- the command line ----------------------------------------------------------------------


def model_uri(run: str | None, model: str | None) -> str:
    if run:
        return f"runs:/{run}/{MODEL_NAME}"
    assert model
    return model if ":/" in model else f"models:/{model}/latest"


def load(uri: str):
    """The pyfunc model at `uri` and its preprocessing."""
    import mlflow.pyfunc

    try:
        loaded = mlflow.pyfunc.load_model(uri)
    except Exception as e:
        raise PredictError(f"cannot load the model {uri}: {e}") from e
    prep = (loaded.metadata.metadata or {}).get("lenet5")
    if prep is None:
        raise PredictError(f"the model {uri} was not logged by lenet5-train (no lenet5 metadata)")
    return loaded, prep


def classify(loaded, prep: dict, images: np.ndarray) -> np.ndarray:
    """Class probabilities (N, classes) of (N, 28, 28) uint8 digits."""
    scores = np.asarray(loaded.predict(to_input(images, prep)), np.float64)
    scores -= scores.max(1, keepdims=True)
    p = np.exp(scores)
    return p / p.sum(1, keepdims=True)


def images_of(path: Path, limit: int | None) -> tuple[list[str], np.ndarray]:
    if not path.is_file():
        raise PredictError(f"{path}: no such file")
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:2] == b"\0\0" or path.suffix == ".gz":
        digits = read_idx(path)[:limit]
        return [f"{path}[{i}]" for i in range(len(digits))], np.stack([to_mnist(d) for d in digits])
    return [str(path)], to_mnist(read_image(path))[None]


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="lenet5-predict", description="Classify digit images with a model lenet5-train logged."
    )
    p.add_argument("files", nargs="+", type=Path, help="PNG/JPEG images, or IDX image files")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--run", help="the run id whose logged model to use")
    which.add_argument("--model", help="a registered model name (its latest version) or a URI")
    p.add_argument("--tracking-uri", help="default $MLFLOW_TRACKING_URI, else the project's store")
    p.add_argument("--limit", type=int, help="classify at most this many images of an IDX file")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Exit status 0, or 2 with a one-line message for a file or model that cannot be used."""
    args = parse_args(argv)
    import mlflow

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    mlflow.set_tracking_uri(tracking_uri(args.tracking_uri))
    quiet = os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        batches = [images_of(f, args.limit) for f in args.files]  # every file, before loading
        with environ({"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": quiet}):
            loaded, prep = load(model_uri(args.run, args.model))
        for names, images in batches:
            for name, p in zip(names, classify(loaded, prep, images), strict=True):
                best = int(p.argmax())
                probs = " ".join(f"{k}:{v:.3f}" for k, v in enumerate(p))
                print(f"{name}: {best} (p={p[best]:.3f})  {probs}")
    except PredictError as e:
        print(f"lenet5-predict: {e}", file=sys.stderr)
        return 2
    return 0


def cli() -> None:
    sys.exit(main())


__all__ = ["PredictError", "classify", "load", "main", "read_idx"]
