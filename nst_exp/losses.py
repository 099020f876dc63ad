"""The Gatys objective: content loss, Gram-matrix style losses, their weighted sum.

Formulas as in Gatys, Ecker, Bethge (arXiv:1508.06576, eqs. 1-7). F^l is the
N_l x M_l matrix of layer l's activations (N_l filters, M_l = height x width).

Two conventions, named where they differ (``loss=paper`` is the default):

- ``paper``: L_content = 1/2 sum (F - P)^2; G = F F^T;
  E_l = sum (G - A)^2 / (4 N_l^2 M_l^2).
- ``authors_code``: as in the authors' reference PyTorch code
  (leongatys/PytorchNeuralStyleTransfer): G = F F^T / M_l; E_l = 1e3 / N_l^2 *
  mean (G - A)^2; L_content = mean (F - P)^2. Its per-layer weights are 1, not
  1/5: use it with ``style_weights=[1,1,1,1,1]`` to match that code exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
from torch import Tensor, nn

from nst_exp.errors import NstError
from nst_exp.features import FeatureExtractor

CONVENTIONS = ("paper", "authors_code")


def gram_matrix(features: Tensor, normalize: bool = False) -> Tensor:
    """(B, N, H, W) -> (B, N, N), G_ij = sum_k F_ik F_jk; divided by M = H*W if ``normalize``."""
    b, n, h, w = features.shape
    flat = features.reshape(b, n, h * w)
    gram = flat @ flat.transpose(1, 2)
    return gram / (h * w) if normalize else gram


def content_loss(features: Tensor, target: Tensor) -> Tensor:
    """(B, N, H, W) twice -> scalar 1/2 sum (F - P)^2 (paper, eq. 1)."""
    return 0.5 * (features - target).pow(2).sum()


def style_layer_loss(gram: Tensor, target: Tensor, n: int, m: int) -> Tensor:
    """(B, N, N) twice -> scalar E_l = sum (G - A)^2 / (4 N^2 M^2) (paper, eq. 4)."""
    return (gram - target).pow(2).sum() / (4.0 * n**2 * m**2)


def authors_content_loss(features: Tensor, target: Tensor) -> Tensor:
    """(B, N, H, W) twice -> scalar mean (F - P)^2 (authors' code: nn.MSELoss)."""
    return (features - target).pow(2).mean()


def authors_style_layer_loss(gram: Tensor, target: Tensor, n: int) -> Tensor:
    """(B, N, N) Grams already divided by M -> scalar 1e3 / N^2 * mean (G - A)^2 (authors' code)."""
    return 1e3 / n**2 * (gram - target).pow(2).mean()


@dataclass
class LossTerms:
    """One evaluation of the objective; tensors are scalars on the image's device."""

    total: Tensor
    content: Tensor
    style: Tensor
    style_layers: dict[str, Tensor]  # E_l per layer, before w_l and beta


def equal_style_weights(style_layers: Sequence[str], style_weights: Sequence[float] | None) -> list[float]:
    """The w_l: as given, or 1/L each (the paper's 1/5 on five layers); length checked."""
    if style_weights is None:
        return [1.0 / len(style_layers)] * len(style_layers) if style_layers else []
    if len(style_weights) != len(style_layers):
        raise NstError(
            f"style_weights has {len(style_weights)} values but style_layers has "
            f"{len(style_layers)} ({', '.join(style_layers)}). Give one weight per layer, "
            "or style_weights=null for 1/L each."
        )
    return [float(w) for w in style_weights]


class GatysLoss(nn.Module):
    """L_total = alpha * L_content + beta * sum_l w_l E_l, targets computed once.

    Several style images may be given with blend weights b_s (summing to 1):
    each keeps its own Gram targets and E_l = sum_s b_s E_l(s).
    """

    def __init__(
        self,
        extractor: FeatureExtractor,
        content: Tensor,
        styles: Sequence[tuple[Tensor, float]],
        content_layers: Sequence[str],
        style_layers: Sequence[str],
        style_weights: Sequence[float],
        alpha: float,
        beta: float,
        convention: str = "paper",
    ) -> None:
        super().__init__()
        if convention not in CONVENTIONS:
            raise NstError(f"Unknown loss convention '{convention}'. Known: {', '.join(CONVENTIONS)}.")
        self.extractor = extractor
        self.content_layers = list(content_layers)
        self.style_layers = list(style_layers)
        self.style_weights = dict(zip(style_layers, style_weights))
        self.alpha, self.beta, self.convention = float(alpha), float(beta), convention
        self.normalize_gram = convention == "authors_code"
        with torch.no_grad():
            targets = extractor(content)
            for layer in self.content_layers:
                self.register_buffer(f"content_{layer}", targets[layer].detach().clone())
            self.register_buffer("blend", torch.tensor([w for _, w in styles], dtype=torch.float32))
            grams: dict[str, list[Tensor]] = {layer: [] for layer in self.style_layers}
            for image, _ in styles:
                features = extractor(image)
                for layer in self.style_layers:
                    grams[layer].append(gram_matrix(features[layer], self.normalize_gram)[0])
            for layer in self.style_layers:
                self.register_buffer(f"gram_{layer}", torch.stack(grams[layer]))

    def target(self, kind: str, layer: str) -> Tensor:
        return self.get_buffer(f"{kind}_{layer}")

    def forward(self, image: Tensor) -> LossTerms:
        """image: (1, 3, H, W) in [0, 1] -> LossTerms."""
        features = self.extractor(image)
        zero = image.new_zeros(())
        content = sum((self._content(features[l], self.target("content", l)) for l in self.content_layers), zero)
        per_layer = {layer: self._style(features[layer], self.target("gram", layer)) for layer in self.style_layers}
        style = sum((self.style_weights[l] * e for l, e in per_layer.items()), zero)
        total = self.alpha * content + self.beta * style
        return LossTerms(total=total, content=content, style=style, style_layers=per_layer)

    def _content(self, features: Tensor, target: Tensor) -> Tensor:
        if self.convention == "paper":
            return content_loss(features, target)
        return authors_content_loss(features, target)

    def _style(self, features: Tensor, targets: Tensor) -> Tensor:
        """features (1, N, H, W), targets (S, N, N) -> sum_s b_s E_l(s)."""
        _, n, h, w = features.shape
        gram = gram_matrix(features, self.normalize_gram)
        losses = []
        for target in targets:
            if self.convention == "paper":
                losses.append(style_layer_loss(gram, target[None], n, h * w))
            else:
                losses.append(authors_style_layer_loss(gram, target[None], n))
        return (torch.stack(losses) * self.blend).sum()

    def extra_repr(self) -> str:
        weights = ", ".join(f"{l}: {w:g}" for l, w in self.style_weights.items())
        return (
            f"alpha={self.alpha:g}, beta={self.beta:g}, convention={self.convention}, "
            f"content_layers={self.content_layers}, style_weights={{{weights}}}, styles={len(self.blend)}"
        )


def loss_values(terms: LossTerms) -> Mapping[str, float]:
    """The scalars to log, by TensorBoard tag, in one device-to-host copy."""
    values = {"loss/total": terms.total, "loss/content": terms.content, "loss/style": terms.style}
    values.update({f"loss/style/{layer}": e for layer, e in terms.style_layers.items()})
    stacked = torch.stack([v.detach().float() for v in values.values()]).cpu().tolist()
    return dict(zip(values, stacked))
