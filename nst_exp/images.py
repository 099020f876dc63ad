"""Reading and writing images as tensors (nst_exp.image_files finds and fetches the files).

Images enter as upright sRGB in [0, 1], whatever their file's mode (grey,
palette, RGBA, CMYK, Lab, 16-bit, float), colour profile (see
``nst_exp.srgb.to_rgb``) or EXIF orientation, already downscaled on the CPU to the size the run needs, so
a huge photo never reaches the device whole. ``header_size`` and ``fit_size``
give the shape ``load`` will produce without decoding the pixels.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from nst_exp.atomic import atomic_write
from nst_exp.errors import NstError
from nst_exp.image_files import image_suffixes, not_a_file
from nst_exp.srgb import to_rgb

# Pillow's own decompression-bomb threshold (about 89 megapixels) unless the user raises it.
DEFAULT_MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485


def _open(path: Path, max_pixels: int) -> Image.Image:
    """``path`` opened lazily (header only), refused if it is not a regular file or has too many pixels."""
    problem = not_a_file(Path(path), "image", suffixes=image_suffixes())
    if problem:
        raise NstError(problem)  # Pillow would block on a FIFO, or fail on a directory as "damaged"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    except Image.DecompressionBombError:
        image = None
    except UnidentifiedImageError as error:
        raise NstError(
            f"'{path}' is not an image Pillow can read (empty, corrupt, or not an image whatever "
            "its extension). Re-export it as PNG or JPEG."
        ) from error
    except OSError as error:
        raise NstError(f"'{path}' is damaged and cannot be decoded ({error}). Re-download or re-export it.") from error
    if image is None or image.width * image.height > max_pixels:
        size = f"{image.width} x {image.height} pixels" if image is not None else "too many pixels"
        raise NstError(
            f"'{path}' is {size}, over the limit of {max_pixels:,} pixels that guards against "
            "decompression bombs. If you trust the file, raise max_image_pixels, or shrink the image first."
        )
    return image


# EXIF orientation -> the transposition that shows the image upright (as ImageOps.exif_transpose).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation (1 = upright) as far as the header tells, without decoding the pixels.

    A PNG's eXIf chunk after its pixel data would need the whole file decoded;
    it is not read, by ``header_size`` and ``load`` alike, so both agree.
    """
    if image.format == "PNG" and "exif" not in image.info:
        return 1
    try:
        orientation = image.getexif().get(0x0112, 1)
    except (OSError, SyntaxError, ValueError):  # a damaged EXIF block: show the pixels as stored
        return 1
    return orientation if orientation in _UPRIGHT else 1


def header_size(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """(width, height) of ``path`` as shown upright, read from its header without decoding the pixels.

    Refuses what ``load`` refuses before decoding: not a regular file, not an
    image, over ``max_pixels``. EXIF orientations 5 to 8 swap width and height.
    """
    if isinstance(path, Image.Image):  # an image in memory (the Python API)
        width, height = path.size
        return (height, width) if _orientation(path) >= 5 else (width, height)
    with _open(path, max_pixels) as image:
        width, height = image.size
        return (height, width) if _orientation(image) >= 5 else (width, height)


def fit_size(width: int, height: int, long_side: int) -> tuple[int, int]:
    """(H, W) that ``load`` gives an upright ``width`` x ``height`` image at ``long_side``: aspect kept, >= 1 px."""
    scale = long_side / max(width, height)
    return max(1, round(height * scale)), max(1, round(width * scale))


def scaled_side(long_side: int, scale: float) -> int:
    """The long side of an image loaded at ``scale`` times ``long_side`` (a style image at ``style_scale``): >= 1 px."""
    return max(1, round(scale * long_side))


def open_rgb(path: Path, long_side: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Read ``path`` (or a PIL image in memory) as an upright 8-bit sRGB image, shrunk while decoding if larger than needed."""
    if isinstance(path, Image.Image):
        image = to_rgb(path, "the given image")
        orientation = _orientation(path)
        return image.transpose(_UPRIGHT[orientation]) if orientation in _UPRIGHT else image
    image = _open(path, max_pixels)
    if long_side is not None and image.format == "JPEG":
        image.draft("RGB", (long_side, long_side))  # decode at 1/2, 1/4, 1/8 scale when that suffices
    try:
        orientation = _orientation(image)
        image.load()
    except (OSError, SyntaxError, ValueError) as error:
        raise NstError(
            f"'{path}' is damaged and cannot be decoded ({error}). Re-download or re-export it."
        ) from error
    image = to_rgb(image, str(path))
    return image.transpose(_UPRIGHT[orientation]) if orientation in _UPRIGHT else image


def to_tensor(image: Image.Image) -> Tensor:
    """RGB PIL image -> (1, 3, H, W) float32 in [0, 1], contiguous (NCHW in memory).

    The HWC pixels transposed without a copy would stay channels-last in memory: a
    start image like that gives a gradient L-BFGS cannot flatten, and the network
    would run in that layout whatever ``channels_last`` says.
    """
    planes = np.ascontiguousarray(np.asarray(image, dtype=np.uint8).transpose(2, 0, 1))  # a writable CHW copy
    return torch.from_numpy(planes).float().div_(255.0).unsqueeze(0)


def to_pil(image: Tensor) -> Image.Image:
    """(1, 3, H, W) or (3, H, W) in [0, 1] (clamped) -> RGB PIL image."""
    image = image.detach().float().clamp(0, 1).squeeze(0)
    array = image.mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array, "RGB")


def load(path: Path, long_side: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> Tensor:
    """``path`` as (1, 3, H, W) in [0, 1] with long side ``long_side``: (H, W) is
    ``fit_size(*header_size(path), long_side)``, whatever size a JPEG's draft decode gives."""
    height, width = fit_size(*header_size(path, max_pixels), long_side)
    image = open_rgb(path, long_side, max_pixels)
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return to_tensor(image)


def load_sized(path: Path, size: tuple[int, int], max_pixels: int = DEFAULT_MAX_PIXELS) -> Tensor:
    """``path`` as (1, 3, H, W) in [0, 1] resized to exactly ``size`` = (H, W)."""
    image = open_rgb(path, max(size), max_pixels)
    return to_tensor(image.resize((size[1], size[0]), Image.Resampling.LANCZOS))


def save(image: Tensor, path: Path) -> None:
    """Write a (1, 3, H, W) tensor in [0, 1] as an image; atomic, so a kill leaves no half file."""
    with atomic_write(path, "wb") as out:
        to_pil(image).save(out, format=(path.suffix.lstrip(".") or "png").upper().replace("JPG", "JPEG"))
