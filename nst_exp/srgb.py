"""Any Pillow image as 8-bit sRGB: deep modes on their value scale, transparency on white, colour profiles converted.

``to_rgb`` is what every image passes through on its way in (nst_exp.images.open_rgb),
so a 16-bit PNG, a float TIFF, a CMYK JPEG or an Adobe RGB photo all reach the
network as the sRGB values a viewer would show.
"""

from __future__ import annotations

import io
import logging

import numpy as np
from PIL import Image, ImageCms

from nst_exp.errors import NstError

log = logging.getLogger(__name__)


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
