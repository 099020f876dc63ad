"""Colour control (Gatys et al., "Controlling Perceptual Factors in Neural Style Transfer", CVPR 2017, sec. 5).

Two ways to keep the content photo's colours while transferring a painting's style:

- ``luminance`` (sec. 5.1): style transfer on luminance only. The content and the
  style image are reduced to their luminance Y of the YIQ colour space (NTSC:
  Y = 0.299 R + 0.587 G + 0.114 B), the style's luminance matched to the
  content's mean and standard deviation (L_S' = sigma_C / sigma_S (L_S - mu_S) + mu_C),
  and each is shown to the RGB-trained network as a grey image (Y in all three
  channels). The synthesised image is kept grey (the objective sees its channel
  mean), and its luminance is recombined with the content's I and Q channels.
- ``histogram`` (sec. 5.2): the style image's colours are mapped linearly,
  x' = A (x - mu_S) + mu_C, so that their mean and covariance equal the content's
  (A Sigma_S A^T = Sigma_C), before the run. Three choices of A
  (``color.histogram``), named as in the authors' notebook: ``cholesky``
  (A = L_C L_S^-1, Cholesky factors), ``pca`` (A = Sigma_C^1/2 Sigma_S^-1/2,
  symmetric eigen square roots; the "image analogies" map the authors' notebook
  uses) and ``symmetric`` (the one symmetric A, the Monge-Kantorovich map
  Sigma_S^-1/2 (Sigma_S^1/2 Sigma_C Sigma_S^1/2)^1/2 Sigma_S^-1/2).
  The matched image is not clipped to [0, 1] (the authors' notebook clips),
  so its mean and covariance are exactly the content's.

Hand-written: torchvision and Pillow have no YIQ or mean-and-covariance map; skimage's match_histograms maps each channel alone.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from nst_exp.losses import LossTerms

# RGB -> YIQ (NTSC 1953). Rows: Y, I, Q. The inverse is computed, so a round trip is exact.
RGB_TO_YIQ = torch.tensor(
    [
        [0.299, 0.587, 0.114],
        [0.5959, -0.2746, -0.3213],
        [0.2115, -0.5227, 0.3112],
    ],
    dtype=torch.float64,
)
YIQ_TO_RGB = torch.linalg.inv(RGB_TO_YIQ)
# Added to covariance diagonals before factorising, as the authors' notebook does (flat images).
COVARIANCE_EPS = 1e-5


def _mix(image: Tensor, matrix: Tensor) -> Tensor:
    """(B, 3, H, W) -> (B, 3, H, W) with channels multiplied by the 3 x 3 ``matrix``."""
    return torch.einsum("ij,bjhw->bihw", matrix.to(image), image)


def rgb_to_yiq(image: Tensor) -> Tensor:
    """(B, 3, H, W) RGB -> (B, 3, H, W) Y, I, Q."""
    return _mix(image, RGB_TO_YIQ)


def yiq_to_rgb(image: Tensor) -> Tensor:
    """(B, 3, H, W) Y, I, Q -> (B, 3, H, W) RGB (not clipped)."""
    return _mix(image, YIQ_TO_RGB)


def grey(luminance: Tensor) -> Tensor:
    """(B, 1, H, W) -> (B, 3, H, W), the same value in every channel."""
    return luminance.expand(-1, 3, -1, -1).contiguous()


def luminance(image: Tensor) -> Tensor:
    """(B, 3, H, W) RGB -> (B, 1, H, W) Y: ITU-R BT.601 luma, YIQ's first row."""
    return _mix(image, RGB_TO_YIQ[:1])


def match_luminance(style: Tensor, content: Tensor) -> Tensor:
    """(B, 1, H, W) luminances -> the style's, shifted and scaled to the content's mean and std."""
    scale = content.std() / style.std().clamp_min(1e-8)
    return (style - style.mean()) * scale + content.mean()


def colour_statistics(image: Tensor) -> tuple[Tensor, Tensor]:
    """(1, 3, H, W) -> mean (3,) and covariance (3, 3) of its pixels' colours (divided by H*W), float64."""
    pixels = image[0].reshape(3, -1).double()
    mean = pixels.mean(1)
    centred = pixels - mean[:, None]
    return mean, centred @ centred.T / pixels.shape[1]


def _sqrtm(matrix: Tensor) -> Tensor:
    """Symmetric square root of a symmetric positive definite matrix."""
    values, vectors = torch.linalg.eigh(matrix)
    return vectors @ torch.diag(values.clamp_min(0).sqrt()) @ vectors.T


def colour_map(source_cov: Tensor, target_cov: Tensor, variant: str) -> Tensor:
    """A with A source_cov A^T = target_cov, by ``variant`` (cholesky | pca | symmetric)."""
    eye = torch.eye(3, dtype=source_cov.dtype)
    source_cov, target_cov = source_cov + COVARIANCE_EPS * eye, target_cov + COVARIANCE_EPS * eye
    if variant == "cholesky":
        return torch.linalg.cholesky(target_cov) @ torch.linalg.inv(torch.linalg.cholesky(source_cov))
    if variant == "pca":
        return _sqrtm(target_cov) @ torch.linalg.inv(_sqrtm(source_cov))
    if variant == "symmetric":
        root = _sqrtm(source_cov)
        inverse_root = torch.linalg.inv(root)
        return inverse_root @ _sqrtm(root @ target_cov @ root) @ inverse_root
    raise ValueError(f"Unknown colour map variant {variant!r}")


def match_histogram(style: Tensor, content: Tensor, variant: str = "pca") -> Tensor:
    """(1, 3, H, W) style recoloured so its colour mean and covariance equal the content's (not clipped)."""
    style_mean, style_cov = colour_statistics(style)
    content_mean, content_cov = colour_statistics(content)
    matrix = colour_map(style_cov, content_cov, variant)
    centred = style.double() - style_mean.reshape(1, 3, 1, 1)
    return (_mix(centred, matrix) + content_mean.reshape(1, 3, 1, 1)).to(style.dtype)


class LuminanceLoss(nn.Module):
    """Evaluates a loss on the image's channel mean shown in all three channels.

    The gradient is then the same in every channel, so an image that starts
    grey stays grey under L-BFGS or Adam, and that grey value is its luminance.
    """

    def __init__(self, loss: nn.Module) -> None:
        super().__init__()
        self.objective = loss  # the attribute's name is in checkpoints' fingerprints (objective.<buffer>): kept

    def forward(self, image: Tensor) -> LossTerms:
        return self.objective(grey(image.mean(1, keepdim=True)))

    def extra_repr(self) -> str:
        return f"{self.objective.extra_repr()}, luminance only (CVPR 2017, sec. 5.1)"


class ColorControl:
    """What colour control does to the inputs, the objective, the start and the result."""

    def __init__(self, conf: Any) -> None:
        self.mode, self.variant, self.match = conf.mode, conf.histogram, conf.match_luminance

    def content(self, content: Tensor) -> Tensor:
        """The content image as the network sees it."""
        return grey(luminance(content)) if self.mode == "luminance" else content

    def style(self, style: Tensor, content: Tensor) -> Tensor:
        """A style image as the network sees it, given the content photo (RGB)."""
        if self.mode == "luminance":
            style_y = luminance(style)
            return grey(match_luminance(style_y, luminance(content)) if self.match else style_y)
        if self.mode == "histogram":
            return match_histogram(style, content, self.variant)
        return style

    def initial(self, image: Tensor, kind: str, content: Tensor) -> Tensor:
        """The first stage's start: grey for luminance transfer; a style start recoloured for histogram."""
        if self.mode == "luminance":
            return grey(luminance(image))
        if self.mode == "histogram" and kind == "style":
            return match_histogram(image, content, self.variant)
        return image

    def wrap_loss(self, loss: nn.Module) -> nn.Module:
        """The loss the optimiser sees: ``loss`` itself, or for luminance transfer ``loss`` of the image's luminance."""
        return LuminanceLoss(loss) if self.mode == "luminance" else loss

    def finish(self, image: Tensor, content: Tensor) -> Tensor:
        """The image to show: for luminance transfer, its luminance with the content's I and Q."""
        if self.mode != "luminance":
            return image
        combined = torch.cat([image.mean(1, keepdim=True), rgb_to_yiq(content)[:, 1:]], 1)
        return yiq_to_rgb(combined)

    def describe(self) -> str:
        if self.mode == "histogram":
            return f"histogram ({self.variant})"
        if self.mode == "luminance":
            return "luminance (YIQ)" + ("" if self.match else ", style luminance not matched")
        return "none"
