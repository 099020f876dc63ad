"""Network-free measures of a result picture: content kept, style matched, colours matched.

- :func:`content_ssim`: structural similarity (Wang et al. 2004) of the result's
  luminance to the content's, 1 when the photo's structure is kept.
- :func:`style_swd`: sliced Wasserstein distance between the 7 x 7 patches of
  the result and of the style image(s) over a Laplacian pyramid, the SWD of
  Karras et al. 2018 ("Progressive growing of GANs", Sec. 5 and their
  ``metrics/sliced_wasserstein.py``), lower when the textures are closer.
- :func:`color_distance`: sliced Wasserstein distance between the RGB pixel
  distributions, lower when the palettes are closer.

Images are (1, 3, H, W) tensors in [0, 1]; they may differ in size. Every
measure is computed on the CPU (filters in float32, projections and sorting in
float64) with seeded generators, so the same images always give the same number
whatever device they came from. nst_exp.evaluate scores run directories with them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from nst_exp.color import luminance
from nst_exp.errors import NstError
from nst_exp.results import COLOR_DISTANCE, CONTENT_SSIM, STYLE_SWD

log = logging.getLogger(__name__)

# SSIM's Gaussian window as in Wang et al. 2004: 11 x 11, sigma 1.5 pixels.
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03  # their constants, for images in [0, 1]

# SWD as in Karras et al. 2018: 7 x 7 neighbourhoods, pyramid levels down to 16 px,
# random unit directions in the 147-d patch space, sorted projections compared.
PATCH_SIZE = 7
MIN_LEVEL_SIZE = 16  # px, the short side of the coarsest pyramid level
MAX_LEVELS = 4  # the finest levels only: 256 px -> 256, 128, 64, 32
# Per image and level: every patch when there are at most this many, else a seeded
# sample (Karras et al. take 128 per image from 16384 images).
MAX_PATCHES = 16384
PATCH_PROJECTIONS = 256  # Karras et al.: 4 x 128
SWD_SCALE = 1e3  # Karras et al. report the distance times 10^3

# Colour: every pixel projected on 64 random unit directions in RGB.
COLOR_PROJECTIONS = 64

# Sorted projections are compared as quantile functions at this many evenly spaced
# levels, so sets of any size (images of different sizes, blends) compare directly.
QUANTILES = 1024

_BINOMIAL_5 = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16  # Karras et al.'s pyramid filter


def score(
    result: Tensor, content: Tensor | None, styles: Sequence[Tensor], weights: Sequence[float]
) -> dict[str, float]:
    """The eval/* scores of ``result`` against its content and its (weighted) style images, all (1, 3, H, W) in [0, 1].

    Only what the run was made with is scored: no content image (``None``), no
    ``eval/content_ssim``; no style images, no ``eval/style_swd`` nor ``eval/color_distance``.
    A score an image is too small for (SSIM's window, SWD's patches) is NaN, with a
    warning: scoring never fails a run.
    """
    result = result.detach().float().cpu().clamp(0, 1)
    styles = [style.detach().float().cpu() for style in styles]
    measures = {}
    if content is not None:
        content = content.detach().float().cpu()
        measures[CONTENT_SSIM] = lambda: content_ssim(result, content)
    if styles:
        measures[STYLE_SWD] = lambda: style_swd(result, styles, weights)
        measures[COLOR_DISTANCE] = lambda: color_distance(result, styles, weights)
    values = {}
    for key, measure in measures.items():
        try:
            values[key] = measure()
        except NstError as error:
            log.warning("%s not measured: %s", key, error)
            values[key] = float("nan")
    return values


def content_ssim(result: Tensor, content: Tensor) -> float:
    """SSIM of the result's BT.601 luminance to the content's, at the result's size; 1 = structure kept.

    result: (1, 3, H, W), content: (1, 3, H', W') in [0, 1]; the content is
    resized (bilinear, antialiased) to H x W when the sizes differ.
    """
    result, content = _checked(result, "result"), _checked(content, "content")
    size = tuple(result.shape[-2:])
    if min(size) < SSIM_WINDOW:
        raise NstError(
            f"The result is {size[1]} x {size[0]} px; SSIM's {SSIM_WINDOW} x {SSIM_WINDOW} window needs "
            f"both sides at least {SSIM_WINDOW} px. Evaluate a larger result (image_size=...)."
        )
    if tuple(content.shape[-2:]) != size:
        content = F.interpolate(content, size=size, mode="bilinear", align_corners=False, antialias=True)
    return ssim(luminance(result), luminance(content))


def ssim(x: Tensor, y: Tensor) -> float:
    """(1, 1, H, W) twice in [0, 1] -> mean SSIM (Wang et al. 2004, eq. 13) over a window at every pixel.

    Each window 11 x 11, weighted by a Gaussian of sigma 1.5 px (their Sec. III.C), the images
    mirrored at their edges; C1 = (0.01 L)^2 and C2 = (0.03 L)^2 with L = 1; variances below 0 by
    rounding count as 0. This is torchmetrics' SSIM (tests/test_evaluate.py holds the two together
    to 1e-6); Wang et al.'s own code averages only the windows inside the image. Hand-written:
    importing torchmetrics takes about 1 s (2-core Intel Xeon), which every run would pay at its
    end to score its result.
    """
    offsets = torch.arange(SSIM_WINDOW, dtype=torch.float32) - SSIM_WINDOW // 2
    gaussian = torch.exp(-0.5 * (offsets / SSIM_SIGMA) ** 2)
    gaussian = gaussian / gaussian.sum()
    window = torch.outer(gaussian, gaussian).reshape(1, 1, SSIM_WINDOW, SSIM_WINDOW)
    mirrored = F.pad(torch.cat([x, y]), [SSIM_WINDOW // 2] * 4, mode="reflect")
    x, y = mirrored[:1], mirrored[1:]
    mean_x, mean_y, mean_xx, mean_yy, mean_xy = F.conv2d(torch.cat([x, y, x * x, y * y, x * y]), window)
    variance_x = (mean_xx - mean_x**2).clamp(min=0)
    variance_y = (mean_yy - mean_y**2).clamp(min=0)
    covariance = mean_xy - mean_x * mean_y
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    index = ((2 * mean_x * mean_y + c1) * (2 * covariance + c2)) / (
        (mean_x**2 + mean_y**2 + c1) * (variance_x + variance_y + c2)
    )
    return float(index.mean())


def style_swd(result: Tensor, styles: Sequence[Tensor], weights: Sequence[float], seed: int = 0) -> float:
    """SWD x 10^3 between the result's 7 x 7 patches and the styles' blend, mean over pyramid levels; lower = closer.

    result: (1, 3, H, W); styles: each (1, 3, H_k, W_k), all in [0, 1];
    ``weights``: one per style, any positive scale (normalised here).
    Per Laplacian level, each image gives all its patches, or
    :data:`MAX_PATCHES` at positions drawn with ``seed``. The channels are
    normalised by the set's mean and std (as Karras et al. do, so this
    measures texture, not colour: see :func:`color_distance`; for a blend, the
    mixture's), projected on :data:`PATCH_PROJECTIONS` random unit directions,
    and the sorted projections compared as quantile functions, style k
    counting as its weight's share. Level i of each image is taken at that
    image's own pixel scale, as the network saw the files.
    Departure from Karras et al.: they compare two equal-size random samples;
    quantile functions let sets of any size compare, and identical images
    give exactly 0 instead of the sampling floor.
    """
    result = _checked(result, "result")
    styles, shares = _blend(styles, weights)
    short = min(min(image.shape[-2:]) for image in [result, *styles])
    if short < PATCH_SIZE:
        raise NstError(
            f"An image is {short} px on its short side; style_swd's {PATCH_SIZE} x {PATCH_SIZE} patches "
            f"need at least {PATCH_SIZE} px."
        )
    levels = max(1, min(MAX_LEVELS, (short // MIN_LEVEL_SIZE).bit_length()))  # coarsest >= MIN_LEVEL_SIZE px
    result_pyramid = laplacian_pyramid(result, levels)
    style_pyramids = [laplacian_pyramid(style, levels) for style in styles]
    directions = _directions(PATCH_SIZE * PATCH_SIZE * 3, PATCH_PROJECTIONS, seed)
    distances = []
    for level in range(levels):
        (ours,) = _normalised([_patches(result_pyramid[level], seed)], [1.0])
        theirs = _normalised([_patches(pyramid[level], seed) for pyramid in style_pyramids], shares)
        distances.append(_distance(directions @ ours, [directions @ patches for patches in theirs], shares))
    return float(np.mean(distances) * SWD_SCALE)


def color_distance(result: Tensor, styles: Sequence[Tensor], weights: Sequence[float], seed: int = 0) -> float:
    """Sliced Wasserstein-1 distance between the RGB pixel distributions of the result and the styles' blend.

    result: (1, 3, H, W); styles: each (1, 3, H_k, W_k), all in [0, 1];
    ``weights``: one per style (normalised here), each style's pixels counting
    as its weight's share of the blend whatever its size. All pixels are
    projected on :data:`COLOR_PROJECTIONS` random unit directions in RGB
    (seeded with ``seed``) and the quantile functions compared. The value is
    the mean absolute gap, in [0, 1] intensity units (0 = same colours in the
    same proportions, whatever their places); no pixel is sampled.
    """
    result = _checked(result, "result")
    styles, shares = _blend(styles, weights)
    directions = _directions(3, COLOR_PROJECTIONS, seed)
    return _distance(directions @ _pixels(result), [directions @ _pixels(style) for style in styles], shares)


def laplacian_pyramid(image: Tensor, levels: int) -> list[Tensor]:
    """(1, C, H, W) -> ``levels`` images, finest first: band-pass differences, then the coarsest low-pass.

    Karras et al.'s pyramid: a 5 x 5 binomial blur (mirror borders), halving by
    taking every other pixel, and doubling by zero insertion and the blur x 4.
    """
    pyramid, current = [], image
    for _ in range(levels - 1):
        smaller = _blur(current)[..., ::2, ::2]
        pyramid.append(current - _upsample(smaller, current.shape[-2:]))
        current = smaller
    pyramid.append(current)
    return pyramid


def _checked(image: Tensor, what: str) -> Tensor:
    """A (1, 3, H, W) image as float32 on the CPU (where float64 convolutions are about 20 times slower)."""
    if image.dim() != 4 or image.shape[:2] != (1, 3):
        raise ValueError(f"{what} must be a (1, 3, H, W) image tensor, got shape {tuple(image.shape)}")
    return image.detach().to("cpu", torch.float32)


def _blend(styles: Sequence[Tensor], weights: Sequence[float]) -> tuple[list[Tensor], list[float]]:
    """The styles checked and their weights as shares summing to 1."""
    if len(styles) == 0 or len(styles) != len(weights):
        raise ValueError(f"need one weight per style and at least one style, got {len(styles)} and {len(weights)}")
    if any(weight < 0 for weight in weights) or sum(weights) <= 0:
        raise ValueError(f"style weights must be non-negative with a positive sum, got {list(weights)}")
    total = float(sum(weights))
    return [_checked(style, f"styles[{i}]") for i, style in enumerate(styles)], [w / total for w in weights]


def _split(total: int, shares: Sequence[float]) -> list[int]:
    """``total`` split in proportion to ``shares`` (largest remainders), summing to ``total``."""
    exact = [share * total for share in shares]
    counts = [int(value) for value in exact]
    by_remainder = sorted(range(len(shares)), key=lambda i: counts[i] - exact[i])
    for i in by_remainder[: total - sum(counts)]:
        counts[i] += 1
    return counts


def _directions(dims: int, count: int, seed: int) -> np.ndarray:
    """(count, dims) random unit vectors, seeded."""
    generator = torch.Generator().manual_seed(seed)
    directions = torch.randn(count, dims, generator=generator, dtype=torch.float64)
    return (directions / directions.norm(dim=1, keepdim=True)).numpy()


def _blur(image: Tensor) -> Tensor:
    """Karras et al.'s 5 x 5 binomial filter with mirrored borders; every level is at least 7 px a side.

    Channels go through as a batch of single-channel images: a grouped
    convolution is several times slower on a CPU.
    """
    kernel = torch.outer(_BINOMIAL_5, _BINOMIAL_5).to(image).view(1, 1, 5, 5)
    planes = F.pad(image, [2, 2, 2, 2], mode="reflect").flatten(0, 1).unsqueeze(1)
    return F.conv2d(planes, kernel).view(image.shape)


def _upsample(image: Tensor, size: Sequence[int]) -> Tensor:
    spread = image.new_zeros(*image.shape[:2], *size)
    spread[..., ::2, ::2] = image
    return _blur(spread) * 4


def _patches(level: Tensor, seed: int) -> Tensor:
    """The 7 x 7 patches of ``level`` (1, C, H, W): all, or :data:`MAX_PATCHES` at seeded positions -> (C * 49, N)."""
    height, width = level.shape[-2:]
    patches = F.unfold(level, PATCH_SIZE)[0]  # (C * 49, positions), channel-major
    count = (height - PATCH_SIZE + 1) * (width - PATCH_SIZE + 1)
    if count > MAX_PATCHES:
        patches = patches[:, torch.randperm(count, generator=torch.Generator().manual_seed(seed))[:MAX_PATCHES]]
    return patches


def _normalised(sets: Sequence[Tensor], shares: Sequence[float]) -> list[np.ndarray]:
    """Patch sets (C * 49, N_k) -> float64 copies, each channel centred and scaled by the blend's mean and std.

    Karras et al. normalise a set of patches by its own channel statistics;
    for a blend these are the mixture's, set k counting as ``shares[k]``.
    """
    sets = [patches.double().view(3, PATCH_SIZE * PATCH_SIZE, -1) for patches in sets]
    mean = sum(share * patches.mean(dim=(1, 2), keepdim=True) for patches, share in zip(sets, shares))
    square = sum(share * patches.square().mean(dim=(1, 2), keepdim=True) for patches, share in zip(sets, shares))
    std = (square - mean.square()).clamp_min(0).sqrt().clamp_min(1e-12)  # a flat level stays 0
    return [((patches - mean) / std).flatten(0, 1).numpy() for patches in sets]


def _pixels(image: Tensor) -> np.ndarray:
    """(1, 3, H, W) -> (3, H * W) float64."""
    return image[0].flatten(1).double().numpy()


def _distance(ours: np.ndarray, theirs: Sequence[np.ndarray], shares: Sequence[float]) -> float:
    """Sliced Wasserstein-1: the mean gap between quantile functions, over levels and directions.

    ``ours`` (P, N) and each of ``theirs`` (P, N_k) hold projections on P
    directions. Ours is summarised by :data:`QUANTILES` evenly spaced
    quantiles, the blend by set k's own, ``QUANTILES * shares[k]`` of them.
    """
    blend = np.concatenate(
        [_quantiles(values, count) for values, count in zip(theirs, _split(QUANTILES, shares)) if count], axis=1
    )
    return float(np.abs(_quantiles(ours, QUANTILES) - np.sort(blend, axis=1)).mean())


def _quantiles(values: np.ndarray, count: int) -> np.ndarray:
    """(P, N) values -> (P, count): per row, the quantiles at levels (i + 0.5) / count.

    Sorted with NumPy: about ten times faster than torch.sort on a CPU.
    """
    ranks = ((np.arange(count) + 0.5) / count * values.shape[1]).astype(np.int64)
    return np.sort(values, axis=1)[:, ranks]
