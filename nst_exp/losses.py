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

Extensions from Gatys et al., "Controlling Perceptual Factors in Neural Style
Transfer" (CVPR 2017): several style images with weights, and guided Gram
matrices for spatial control (sec. 4). An optional total-variation term
(not in the papers) is off by default.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from nst_exp.config import Convention, Propagation, default
from nst_exp.errors import NstError
from nst_exp.features import FeatureExtractor
from nst_exp.guidance import layer_guides
from nst_exp.results import CONTENT, STYLE, TOTAL, TV, style_image_key, style_layer_key

log = logging.getLogger(__name__)


def _matmul(a: Tensor, b: Tensor) -> Tensor:
    """(B, P, Q) @ (B, Q, R), one ``mm`` per image: for bfloat16 on the CPU, ``bmm`` copies a
    transposed operand and multiplies 1.4-6x slower than ``mm``, which takes the transpose as a
    stride (AMD EPYC AVX512-BF16, Gram shapes of a 256 px run; float32 the same either way).
    Each product is written into its slice of the result: stacking them copied each one again
    (0.1-0.26 ms a layer's gradient at 256 px, Intel Xeon AMX-BF16)."""
    out = a.new_empty((a.shape[0], a.shape[1], b.shape[2]))
    for x, y, product in zip(a, b, out):
        torch.mm(x, y, out=product)
    return out


class _Gram(torch.autograd.Function):
    """F F^T with a one-matmul backward: dL/dF = (dL/dG + dL/dG^T) F.

    Autograd through ``flat @ flat.transpose(1, 2)`` takes two N x N x M matmuls
    for the gradient (one per operand); G is symmetric, so one does. By FLOP count
    the Gram matrices are about 7% of a step at 256 px; this saves a third of that.
    """

    @staticmethod
    def forward(ctx: Any, flat: Tensor) -> Tensor:
        ctx.save_for_backward(flat)
        return _matmul(flat, flat.transpose(1, 2))

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (flat,) = ctx.saved_tensors
        return _matmul(grad + grad.transpose(1, 2), flat)


class _GramNHWC(torch.autograd.Function):
    """F^T F for positions-major features (B, M, N), as channels_last stores them: no copy to (B, N, M).

    Reshaping NHWC features to (B, N, M) copies them, and the gradient then comes back
    in the NCHW layout, which the channels_last network's backward has to reorder.
    """

    @staticmethod
    def forward(ctx: Any, flat: Tensor) -> Tensor:
        ctx.save_for_backward(flat)
        return _matmul(flat.transpose(1, 2), flat)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (flat,) = ctx.saved_tensors
        return _matmul(flat, grad + grad.transpose(1, 2))


def gram_matrix(features: Tensor, normalize: bool = False) -> Tensor:
    """(B, N, H, W) -> (B, N, N), G_ij = sum_k F_ik F_jk; divided by M = H*W if ``normalize``.

    bfloat16 features (``precision=bf16``) are multiplied as they are, the products summed in
    float32 by the matmul and each G_ij rounded to bfloat16 once, then returned as float32: no
    float32 copy of the layer is made, nor of its gradient.
    """
    b, n, h, w = features.shape
    if features.is_contiguous(memory_format=torch.channels_last) and not features.is_contiguous():
        flat = features.permute(0, 2, 3, 1).reshape(b, h * w, n)  # a view: (B, M, N)
        gram = _GramNHWC.apply(flat) if flat.requires_grad else _matmul(flat.transpose(1, 2), flat)
    else:
        flat = features.reshape(b, n, h * w)
        gram = _Gram.apply(flat) if flat.requires_grad else _matmul(flat, flat.transpose(1, 2))
    gram = gram.float() if gram.dtype == torch.bfloat16 else gram
    return gram / (h * w) if normalize else gram


def mean_gram(features: Tensor, guide: Tensor | None = None) -> Tensor:
    """(B, N, H, W), optional normalised guide (H, W) -> (B, N, N) Gram per position, (F o T)(F o T)^T / M."""
    if guide is not None:
        features = features * guide
    return gram_matrix(features, normalize=True)


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


class StyleTarget(NamedTuple):
    """One style image the objective matches, with its weight and, for spatial control, where.

    A plain ``(image, weight)`` pair is a StyleTarget without guides.
    """

    image: Tensor  # (1, 3, H_s, W_s) in [0, 1], as the network sees it
    weight: float  # blend weight b_s, or region weight lambda_r; the caller normalises
    guide: Tensor | None = None  # (H, W) in [0, 1] on the content: where this style applies; None = everywhere
    style_guide: Tensor | None = None  # (H_s, W_s) on the style image: which part of it; None = all
    name: str = "style"  # label for logs (loss/style_image/<name>)


@dataclass
class LossTerms:
    """One evaluation of the objective; tensors are scalars on the image's device."""

    total: Tensor
    content: Tensor
    style: Tensor
    style_layers: dict[str, Tensor]  # E_l per layer, before w_l and beta
    tv: Tensor | None = None  # total variation of the image, before tv_weight
    style_images: dict[str, Tensor] = field(default_factory=dict)  # sum_l w_l E_l(s) per style, when several


def total_variation(image: Tensor) -> Tensor:
    """(B, C, H, W) -> scalar sum of squared differences between vertical and horizontal neighbours.

    The squared (beta = 2) total variation of Mahendran and Vedaldi; not in the
    Gatys papers, which have no regulariser (``tv_weight=0``, the default).
    """
    down = image[..., 1:, :] - image[..., :-1, :]
    right = image[..., :, 1:] - image[..., :, :-1]
    return down.pow(2).sum() + right.pow(2).sum()


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


@dataclass(frozen=True)
class LossSettings:
    """What the objective matches and how it weighs it; built from the config once.

    ``style_weights`` are the w_l, resolved (1/L each when the config says null)
    and length-checked here, so the objective never sees a half-valid setting.
    A field left out takes conf/config.yaml's default (the paper's settings).
    """

    content_layers: tuple[str, ...] = tuple(default("content_layers"))
    style_layers: tuple[str, ...] = tuple(default("style_layers"))
    style_weights: tuple[float, ...] | None = default("style_weights")  # None = 1/L each
    alpha: float = default("alpha")
    beta: float = default("beta")
    convention: Convention = Convention(default("loss"))
    propagation: Propagation = Propagation(default("spatial.propagation"))
    tv_weight: float = default("tv_weight")

    def __post_init__(self) -> None:
        object.__setattr__(self, "content_layers", tuple(self.content_layers))
        object.__setattr__(self, "style_layers", tuple(self.style_layers))
        object.__setattr__(self, "style_weights", tuple(equal_style_weights(self.style_layers, self.style_weights)))
        object.__setattr__(self, "convention", Convention.parse(self.convention, "loss convention"))
        object.__setattr__(self, "propagation", Propagation.parse(self.propagation, "spatial.propagation"))
        for key in ("alpha", "beta", "tv_weight"):
            object.__setattr__(self, key, float(getattr(self, key)))

    @classmethod
    def from_config(cls, cfg: Any) -> LossSettings:
        return cls(
            content_layers=cfg.content_layers,
            style_layers=cfg.style_layers,
            style_weights=cfg.style_weights,
            alpha=cfg.alpha,
            beta=cfg.beta,
            convention=cfg.loss,
            propagation=cfg.spatial.propagation,
            tv_weight=cfg.tv_weight,
        )

    @property
    def layers(self) -> list[str]:
        """The layers the objective reads: content layers, then style layers, each once."""
        return list(dict.fromkeys([*self.content_layers, *self.style_layers]))


class GatysLoss(nn.Module):
    """L_total = alpha * L_content + beta * sum_l w_l E_l (+ tv_weight * TV), targets computed once.

    Several style images may be given with weights (blend weights b_s summing
    to 1, or region weights lambda_r): each keeps its own Gram targets and
    E_l = sum_s b_s E_l(s). A style with a ``guide`` is matched only where the
    guide is on, with guided Gram matrices (CVPR 2017, sec. 4): G_r = (F o T_r)(F o T_r)^T,
    T_r carried to each layer as ``propagation`` says (nst_exp.guidance).

    Targets are kept as Grams per position, A^l / M_l(style), and scaled by the
    synthesised image's M_l in eq. 4. With a style image as large as the image
    (the paper's setting) this is exactly eq. 4; when the sizes differ (a
    different aspect ratio, ``style_scale``) the style statistics still compare
    like with like.
    """

    def __init__(
        self,
        extractor: FeatureExtractor,
        content: Tensor,
        styles: Sequence[StyleTarget | tuple[Tensor, float]],
        settings: LossSettings | None = None,
        **options: Any,
    ) -> None:
        """``settings``, or its fields as keyword options (``alpha=2.0, style_layers=[...]``)."""
        super().__init__()
        settings = settings if settings is not None else LossSettings(**options)
        self.settings = settings
        self.extractor = extractor
        self.content_layers = list(settings.content_layers)
        self.style_layers = list(settings.style_layers)
        self.style_weights = dict(zip(settings.style_layers, settings.style_weights))
        self.alpha, self.beta, self.convention = settings.alpha, settings.beta, settings.convention
        self.tv_weight, self.propagation = settings.tv_weight, settings.propagation
        targets = [StyleTarget(*style) for style in styles]
        self.style_names = [target.name for target in targets]
        self.guided = any(target.guide is not None for target in targets)
        with torch.no_grad():
            features = extractor(content)
            for layer in self.content_layers:
                self.register_buffer(f"content_{layer}", features[layer].detach().clone())
            self.register_buffer("blend", torch.tensor([t.weight for t in targets], dtype=torch.float32))
            self._register_style_targets(targets, content)

    def _register_style_targets(self, targets: Sequence[StyleTarget], content: Tensor) -> None:
        """Per layer: gram_<l> (S, N, N) Grams per position, weight_<l> (S,), guide_<l> (S, 1, H_l, W_l)."""
        layers = self.style_layers
        grams: dict[str, list[Tensor]] = {layer: [] for layer in layers}
        guides: dict[str, list[Tensor]] = {layer: [] for layer in layers}
        active: dict[str, list[bool]] = {layer: [] for layer in layers}
        for target in targets:
            features = self.extractor(target.image)
            style_guides = self._guides(target.style_guide, target.image)
            content_guides = self._guides(target.guide, content) if self.guided else {}
            for layer in layers:
                style_guide = style_guides.get(layer)
                grams[layer].append(mean_gram(features[layer], style_guide)[0])
                empty = [g for g in (style_guide, content_guides.get(layer)) if g is not None and not g.any()]
                if empty:
                    log.warning("Style '%s' has no region left on %s; its term there is left out.", target.name, layer)
                active[layer].append(not empty)
                if self.guided:
                    guide = content_guides[layer]
                    guides[layer].append(guide[None] if guide is not None else None)
        for layer in layers:
            self.register_buffer(f"gram_{layer}", torch.stack(grams[layer]))
            self.register_buffer(f"weight_{layer}", self.blend * torch.tensor(active[layer], dtype=torch.float32))
            if self.guided:
                shape = next(g for g in guides[layer] if g is not None).shape
                filled = [g if g is not None else content.new_ones(shape) for g in guides[layer]]
                self.register_buffer(f"guide_{layer}", torch.stack(filled))

    def _guides(self, mask: Tensor | None, image: Tensor) -> dict[str, Tensor]:
        """Normalised per-layer masks for ``mask`` on ``image``; {} without a mask."""
        if mask is None:
            return {}
        if mask.shape != image.shape[-2:]:
            raise ValueError(f"mask {tuple(mask.shape)} does not match image {tuple(image.shape[-2:])}")
        return layer_guides(mask.to(image), self.extractor, self.style_layers, self.propagation)

    def target(self, kind: str, layer: str) -> Tensor:
        return self.get_buffer(f"{kind}_{layer}")

    def forward(self, image: Tensor) -> LossTerms:
        """image: (1, 3, H, W) in [0, 1], the content's size -> LossTerms."""
        features = self.extractor(image, native=True)  # the differences to the targets are taken in float32
        zero = image.new_zeros(())
        content = sum((self._content(features[l], self.target("content", l)) for l in self.content_layers), zero)
        per_style = {layer: self._style(layer, features[layer]) for layer in self.style_layers}
        per_layer = {layer: (e * self.target("weight", layer)).sum() for layer, e in per_style.items()}
        style = sum((self.style_weights[l] * e for l, e in per_layer.items()), zero)
        tv = total_variation(image)
        total = self.alpha * content + self.beta * style
        if self.tv_weight:
            total = total + self.tv_weight * tv
        style_images = {}
        if len(self.style_names) > 1:
            for index, name in enumerate(self.style_names):
                style_images[name] = sum((self.style_weights[l] * e[index] for l, e in per_style.items()), zero)
        return LossTerms(total, content, style, per_layer, tv, style_images)

    def _content(self, features: Tensor, target: Tensor) -> Tensor:
        if self.convention == "paper":
            return content_loss(features, target)
        return authors_content_loss(features, target)

    def _style(self, layer: str, features: Tensor) -> Tensor:
        """features (1, N, H, W) -> (S,) E_l(s) for each style, before its weight."""
        _, n, h, w = features.shape
        m = h * w
        targets = self.target("gram", layer)
        if self.guided:
            features = features * self.target("guide", layer)
        grams = gram_matrix(features)  # (1 or S, N, N), F F^T
        losses = []
        for index, target in enumerate(targets):
            gram = grams[index if self.guided else 0]
            if self.convention == "paper":
                losses.append(style_layer_loss(gram, target * m, n, m))
            else:
                losses.append(authors_style_layer_loss(gram / m, target, n))
        return torch.stack(losses)

    def extra_repr(self) -> str:
        weights = ", ".join(f"{l}: {w:g}" for l, w in self.style_weights.items())
        styles = ", ".join(f"{name}: {b:g}" for name, b in zip(self.style_names, self.blend.tolist()))
        guided = f", guided ({self.propagation})" if self.guided else ""
        return (
            f"alpha={self.alpha:g}, beta={self.beta:g}, convention={self.convention}, "
            f"content_layers={self.content_layers}, style_weights={{{weights}}}, styles={{{styles}}}{guided}, "
            f"tv_weight={self.tv_weight:g}"
        )


def loss_values(terms: LossTerms) -> Mapping[str, float]:
    """The scalars to log, by TensorBoard tag, in one device-to-host copy."""
    values = {TOTAL: terms.total, CONTENT: terms.content, STYLE: terms.style}
    values.update({style_layer_key(layer): e for layer, e in terms.style_layers.items()})
    if terms.tv is not None:
        values[TV] = terms.tv
    values.update({style_image_key(name): e for name, e in terms.style_images.items()})
    stacked = torch.stack([v.detach().float() for v in values.values()]).cpu().tolist()
    return dict(zip(values, stacked))
