"""Finding, fetching, reading and writing images.

Images enter as upright RGB in [0, 1], whatever their file's mode (grey,
palette, RGBA, CMYK, 16-bit) or EXIF orientation, already downscaled on the
CPU to the size the run needs, so a huge photo never reaches the device whole.
"""

from __future__ import annotations

import logging
import os
import urllib.error
import urllib.request
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor
from tqdm import tqdm

from nst_exp.errors import NstError
from nst_exp.results import atomic_write

log = logging.getLogger(__name__)

FETCH_TIMEOUT_S = 30
# Pillow's own decompression-bomb threshold (about 89 megapixels) unless the user raises it.
DEFAULT_MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485


def resolve(path: str, images_dir: str, url: str | None = None, what: str = "image") -> Path:
    """The file for ``path``: absolute as given, else under ``images_dir``; fetched from ``url`` if missing."""
    candidate = Path(path).expanduser()
    if not candidate.is_absolute():
        candidate = Path(images_dir).expanduser() / candidate
    if candidate.is_file():
        return candidate
    fetch_error = ""
    if url:
        try:
            fetch(url, candidate)
            return candidate
        except (urllib.error.URLError, OSError) as error:
            fetch_error = f" Fetching it from {url} failed ({error})."
    raise NstError(
        f"The {what} image '{path}' was not found: looked for {candidate.resolve()} "
        f"(images_dir={images_dir!r}, set with images_dir=... or the NST_IMAGES environment variable).{fetch_error} "
        f"Put the file there, point images_dir at the folder that holds it, or give an absolute path "
        f"with {what}.path=/path/to/image.jpg."
    )


def fetch(url: str, destination: Path) -> None:
    """Download ``url`` to ``destination`` with a progress bar; atomic, so no half files remain."""
    log.info("Fetching %s -> %s", url, destination)
    request = urllib.request.Request(url, headers={"User-Agent": "nst_exp"})
    with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT_S) as response, atomic_write(destination, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=destination.name, disable=None) as bar:
            while chunk := response.read(1 << 16):
                out.write(chunk)
                bar.update(len(chunk))


def open_rgb(path: Path, long_side: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Read ``path`` as an upright 8-bit RGB image, shrunk while decoding if larger than needed."""
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
    if long_side is not None and image.format == "JPEG":
        image.draft("RGB", (long_side, long_side))  # decode at 1/2, 1/4, 1/8 scale when that suffices
    try:
        image.load()
        image = ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError) as error:
        raise NstError(
            f"'{path}' is damaged and cannot be decoded ({error}). Re-download or re-export it."
        ) from error
    return to_rgb(image)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB; transparency composited on white, 16-bit scaled, not clipped."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or values.max() > 255 else 255.0
        image = Image.fromarray(np.clip(values / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def resized(image: Image.Image, long_side: int) -> Image.Image:
    """``image`` scaled so its longer side is ``long_side`` pixels, aspect kept."""
    scale = long_side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image if size == image.size else image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


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
    """``path`` as (1, 3, H, W) in [0, 1] with long side ``long_side``."""
    return to_tensor(resized(open_rgb(path, long_side, max_pixels), long_side))


def load_sized(path: Path, size: tuple[int, int], max_pixels: int = DEFAULT_MAX_PIXELS) -> Tensor:
    """``path`` as (1, 3, H, W) in [0, 1] resized to exactly ``size`` = (H, W)."""
    image = open_rgb(path, max(size), max_pixels)
    return to_tensor(image.resize((size[1], size[0]), Image.Resampling.LANCZOS))


def save(image: Tensor, path: Path) -> None:
    """Write a (1, 3, H, W) tensor in [0, 1] as an image; atomic, so a kill leaves no half file."""
    with atomic_write(path, "wb") as out:
        to_pil(image).save(out, format=(path.suffix.lstrip(".") or "png").upper().replace("JPG", "JPEG"))
