"""Reading and writing images (nst_exp.image_files finds and fetches them).

Images enter as upright sRGB in [0, 1], whatever their file's mode (grey,
palette, RGBA, CMYK, Lab, 16-bit, float), colour profile or EXIF orientation
(see ``to_rgb``), already downscaled on the CPU to the size the run needs, so
a huge photo never reaches the device whole. ``header_size`` and ``fit_size``
give the shape ``load`` will produce without decoding the pixels.
"""

from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageCms, UnidentifiedImageError
from torch import Tensor

from nst_exp.errors import NstError
from nst_exp.image_files import image_suffixes, not_a_file
from nst_exp.results import atomic_write

log = logging.getLogger(__name__)

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


def to_rgb(image: Image.Image, source: str = "the image") -> Image.Image:
    """Any Pillow mode -> 8-bit sRGB; values kept on their scale, transparency composited on white.

    Value scales: 8-bit modes as stored; 16-bit (``I;16*``, and mode ``I`` of a
    PNG) over 65535; other ``I`` (32-bit integer, e.g. a TIFF) over 255 if no
    value exceeds 255, else over 65535, refused beyond; ``F`` (float, e.g. a
    32-bit TIFF) as [0, 1] if no value exceeds 1, else as [0, 255], refused
    when negative, beyond 255 or not finite. So mid-grey is 0.5 in every mode,
    except a float image in [0, 255] whose values all lie below 1 (nearly
    black), which is read as [0, 1].

    Colour: an embedded ICC profile other than sRGB (Adobe RGB, a linear or
    wide-gamut profile, a CMYK press profile) is converted to sRGB with
    littlecms, before any resizing. A profile that cannot be read or does not
    fit the image's mode is ignored with a warning. Without a profile, Lab is
    converted by Pillow as CIE Lab, CMYK by Pillow's plain formula (Adobe's
    inverted CMYK JPEGs are un-inverted by Pillow's decoder).
    """
    icc, file_format = image.info.get("icc_profile"), image.format
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        image = _deep_to_grey(image, source, file_format)
    elif image.mode == "La":  # premultiplied; Pillow converts it to nothing else
        grey, alpha = np.asarray(image, dtype=np.float64).transpose(2, 0, 1)
        grey = np.where(alpha > 0, np.clip(grey * 255.0 / np.maximum(alpha, 1), 0, 255), 0)
        image = Image.fromarray(np.stack([grey + 0.5, alpha], -1).astype(np.uint8), "LA")
    elif image.mode == "RGBa":
        image = image.convert("RGBA")
    elif image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif image.mode == "PA":
        image = image.convert("RGBA")
    image = _to_srgb(image, icc, source)
    if image.mode in ("RGBA", "LA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def _deep_to_grey(image: Image.Image, source: str, file_format: str | None) -> Image.Image:
    """A 16-bit, 32-bit integer or float greyscale image -> 8-bit L on the scale ``to_rgb`` documents."""
    values = np.asarray(image, dtype=np.float64)
    if not np.isfinite(values).all():
        raise NstError(f"{source} holds values that are not finite numbers (NaN or infinity). Re-export it.")
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if image.mode == "F":
        if low < 0 or high > 255:
            raise NstError(
                f"{source} is a floating-point image with values from {low:g} to {high:g}; float images "
                "are read in [0, 1] (or [0, 255]). Scale or tone-map it into [0, 1], or export it as "
                "8- or 16-bit PNG."
            )
        peak = 1.0 if high <= 1.0 + 1e-6 else 255.0
    else:
        sixteen = image.mode.startswith("I;16") or file_format == "PNG"
        if low < 0 or high > 65535:
            raise NstError(
                f"{source} is a 32-bit integer image with values from {low:g} to {high:g}; integer images "
                "are read as 8-bit (0-255) or 16-bit (0-65535). Export it as 8- or 16-bit PNG."
            )
        peak = 65535.0 if sixteen or high > 255 else 255.0
    return Image.fromarray(np.clip(values / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")


SRGB = ImageCms.createProfile("sRGB")
# An ICC profile's colour space -> the Pillow mode of the pixels it describes.
PROFILE_MODES = {"RGB": "RGB", "GRAY": "L", "CMYK": "CMYK", "Lab": "LAB"}


def _to_srgb(image: Image.Image, icc: bytes | None, source: str) -> Image.Image:
    """``image`` (any mode ``to_rgb`` passes on) in sRGB, by its ICC profile; as it is without one."""
    if icc:
        try:
            profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        except (OSError, ImageCms.PyCMSError) as error:
            log.warning("%s: its embedded colour profile cannot be read (%s); colours are loaded as stored.", source, error)
            return image
    else:
        return image
    if "sRGB" in ImageCms.getProfileDescription(profile):
        return image
    alpha = image.getchannel("A") if image.mode in ("RGBA", "LA") else None
    colour = image.convert(image.mode[:-1]) if alpha is not None else image
    if colour.mode == "1":
        colour = colour.convert("L")
    space = profile.profile.xcolor_space.strip()
    if PROFILE_MODES.get(space) != colour.mode:
        log.warning(
            "%s: its embedded colour profile is for %s pixels but the image is %s; colours are loaded as stored.",
            source, space, colour.mode,
        )
        return image
    try:
        converted = ImageCms.profileToProfile(colour, profile, SRGB, outputMode="RGB")
    except ImageCms.PyCMSError as error:
        log.warning("%s: converting its colour profile to sRGB failed (%s); colours are loaded as stored.", source, error)
        return image
    if alpha is not None:
        converted.putalpha(alpha)
    return converted


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
