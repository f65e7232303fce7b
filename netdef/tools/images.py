"""Reading image files with Pillow, every failure one NetdefError naming the image (`netdef detect`, `netdef serve`'s
detect model and `netdef calibrate` read images through here)."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ..errors import NetdefError


def read_image(path: str | Path | BinaryIO) -> np.ndarray:
    """An image file as HxWx3 uint8 RGB (Pillow; EXIF orientation applied like cv2.imread)."""
    from PIL import ImageOps

    with open_image(path) as im:
        return decoded(path, lambda: np.asarray(ImageOps.exif_transpose(im).convert("RGB")))


def check_image(path: str | Path | BinaryIO) -> None:
    """That `path` is an image Pillow reads, from its header alone (no pixels decoded): a command checks every
    input this way before its long work, then decodes the images a batch at a time."""
    with open_image(path):
        pass


@contextmanager
def open_image(path: str | Path | BinaryIO) -> Iterator[Any]:
    """The PIL image of `path` (header read, pixels not yet decoded), closed on leaving."""
    try:
        from PIL import Image
    except ImportError:
        raise NetdefError("reading images needs Pillow: pip install pillow") from None
    with decoded(path, lambda: Image.open(path)) as im:
        yield im


def decoded(path: str | Path | BinaryIO, fn: Callable[[], Any]) -> Any:
    """fn() with Pillow's failures as one NetdefError naming the image."""
    from PIL import Image, UnidentifiedImageError

    try:
        return fn()
    except (OSError, UnidentifiedImageError, ImportError) as e:  # ImportError: a Pillow plugin another package
        raise NetdefError(f"cannot read image {path}: {e}") from None  # added (Ultralytics' HEIF) lacks its module
    except Image.DecompressionBombError as e:
        raise NetdefError(f"cannot read image {path}: {e} (Pillow refuses images this large; raise "
                          f"PIL.Image.MAX_IMAGE_PIXELS from Python if the file is genuine)") from None
