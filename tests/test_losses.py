"""The losses against the paper's formulas (arXiv:1508.06576, eqs. 1-7) on seeded tensors."""

from __future__ import annotations

import pytest
import torch

from nst_exp.errors import NstError
from nst_exp.features import load_network
from nst_exp.losses import (
    GatysLoss,
    authors_style_layer_loss,
    content_loss,
    equal_style_weights,
    gram_matrix,
    style_layer_loss,
)


def explicit_gram(features: torch.Tensor) -> torch.Tensor:
    """G_ij = sum_k F_ik F_jk, written out with loops over i and j (float64)."""
    flat = features[0].reshape(features.shape[1], -1).double()
    n = flat.shape[0]
    return torch.tensor([[float((flat[i] * flat[j]).sum()) for j in range(n)] for i in range(n)], dtype=torch.float64)


def test_gram_gradient_equals_autograd_of_the_plain_product():
    """The one-matmul backward of gram_matrix gives autograd's gradient (checked in float64)."""
    features = torch.rand(2, 4, 3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    weights = torch.rand(2, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ours = features.clone().requires_grad_(True)
    (gram_matrix(ours) * weights).sum().backward()
    plain = features.clone().requires_grad_(True)
    flat = plain.reshape(2, 4, 15)
    ((flat @ flat.transpose(1, 2)) * weights).sum().backward()
    torch.testing.assert_close(ours.grad, plain.grad)
    assert torch.autograd.gradcheck(gram_matrix, (features.clone().requires_grad_(True),))


def test_gram_matrix_is_sum_over_positions():
    features = torch.rand(1, 4, 3, 5, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(gram_matrix(features)[0].double(), explicit_gram(features), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gram_matrix(features, True)[0].double(), explicit_gram(features) / 15, rtol=1e-5, atol=1e-6)


def test_gram_of_channels_last_features_is_the_same_gram_and_gradient():
    """NHWC features (what a channels_last network returns) take the positions-major path: same values."""
    features = torch.rand(2, 4, 3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    weights = torch.rand(2, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    nhwc = features.clone().contiguous(memory_format=torch.channels_last).requires_grad_(True)
    nchw = features.clone().requires_grad_(True)
    assert nhwc.is_contiguous(memory_format=torch.channels_last) and not nhwc.is_contiguous()
    (gram_matrix(nhwc, True) * weights).sum().backward()
    (gram_matrix(nchw, True) * weights).sum().backward()
    torch.testing.assert_close(gram_matrix(nhwc.detach()), gram_matrix(nchw.detach()))
    torch.testing.assert_close(nhwc.grad, nchw.grad)
    assert torch.autograd.gradcheck(gram_matrix, (features.clone().contiguous(memory_format=torch.channels_last)
                                                  .requires_grad_(True),))


def test_content_loss_is_half_sum_of_squares():
    generator = torch.Generator().manual_seed(1)
    x, p = torch.rand(1, 3, 4, 4, generator=generator), torch.rand(1, 3, 4, 4, generator=generator)
    expected = 0.5 * sum(float(a - b) ** 2 for a, b in zip(x.flatten(), p.flatten()))
    assert content_loss(x, p).item() == pytest.approx(expected, rel=1e-6)


def test_style_layer_loss_is_paper_eq4():
    generator = torch.Generator().manual_seed(2)
    x, a = torch.rand(1, 6, 4, 5, generator=generator), torch.rand(1, 6, 4, 5, generator=generator)
    n, m = 6, 20
    g, target = explicit_gram(x), explicit_gram(a)
    expected = float(((g - target) ** 2).sum()) / (4 * n**2 * m**2)
    assert style_layer_loss(gram_matrix(x), gram_matrix(a), n, m).item() == pytest.approx(expected, rel=1e-5)
    authors = 1e3 / n**2 * float(((g / m - target / m) ** 2).mean())
    got = authors_style_layer_loss(gram_matrix(x, True), gram_matrix(a, True), n).item()
    assert got == pytest.approx(authors, rel=1e-5)


def test_style_weights_default_to_one_over_l_and_check_length():
    assert equal_style_weights(["a", "b", "c", "d", "e"], None) == [0.2] * 5
    with pytest.raises(NstError, match="style_weights has 2 values but style_layers has 3"):
        equal_style_weights(["a", "b", "c"], [0.5, 0.5])


def test_total_is_alpha_content_plus_beta_weighted_style():
    network = load_network("vgg19", "random", seed=0)
    style_layers = ["relu1_1", "relu2_1", "relu3_1"]
    extractor = network.extractor(["relu2_2", *style_layers])
    generator = torch.Generator().manual_seed(3)
    content, style, x = (torch.rand(1, 3, 32, 32, generator=generator) for _ in range(3))
    weights = [0.5, 0.3, 0.2]
    objective = GatysLoss(
        extractor, content, [(style, 1.0)],
        content_layers=["relu2_2"], style_layers=style_layers, style_weights=weights, alpha=2.0, beta=7.0,
    )
    terms = objective(x)

    fx, fp, fa = extractor(x), extractor(content), extractor(style)
    expected_content = 0.5 * float(((fx["relu2_2"].double() - fp["relu2_2"].double()) ** 2).sum())
    expected_style = 0.0
    for layer, w in zip(style_layers, weights):
        _, n, h, wd = fx[layer].shape
        g, a = explicit_gram(fx[layer]), explicit_gram(fa[layer])
        e_l = float(((g - a) ** 2).sum()) / (4 * n**2 * (h * wd) ** 2)
        assert terms.style_layers[layer].item() == pytest.approx(e_l, rel=1e-4)
        expected_style += w * e_l
    assert terms.content.item() == pytest.approx(expected_content, rel=1e-5)
    assert terms.style.item() == pytest.approx(expected_style, rel=1e-4)
    assert terms.total.item() == pytest.approx(2.0 * expected_content + 7.0 * expected_style, rel=1e-4)


def test_blended_styles_weight_each_styles_loss():
    network = load_network("vgg19", "random", seed=0)
    extractor = network.extractor(["relu1_1"])
    generator = torch.Generator().manual_seed(4)
    content, s1, s2, x = (torch.rand(1, 3, 16, 16, generator=generator) for _ in range(4))

    def style_loss(styles):
        loss = GatysLoss(extractor, content, styles, content_layers=[], style_layers=["relu1_1"], alpha=1.0, beta=1.0)
        return loss(x).style.item()

    blended = style_loss([(s1, 0.7), (s2, 0.3)])
    assert blended == pytest.approx(0.7 * style_loss([(s1, 1.0)]) + 0.3 * style_loss([(s2, 1.0)]), rel=1e-5)


def test_unknown_convention_is_refused():
    network = load_network("vgg19", "random", seed=0)
    image = torch.rand(1, 3, 16, 16)
    with pytest.raises(NstError, match="Unknown loss convention 'caffe'. Known: paper, authors_code"):
        GatysLoss(network.extractor(["relu1_1"]), image, [(image, 1.0)], content_layers=[], style_layers=["relu1_1"],
                  convention="caffe")
