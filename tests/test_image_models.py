"""The static-image models (Tables 1, 2, 4): shapes, argument checks, and N == M after convert."""
import pytest
import torch
import torch.nn as nn

from sj_qvm import QuantReLU, convert
from sj_qvm.analysis import ann_levels, compare_levels
from sj_qvm.image_models import IMAGE_ARCHS, build_image_model


@pytest.mark.parametrize("arch", IMAGE_ARCHS)
@pytest.mark.parametrize("variant,side", [("cifar", 32), ("imagenet", 64)])
def test_shapes_and_float_twin(arch, variant, side):
    net = build_image_model(arch, num_classes=7, width=4, variant=variant).eval()
    x = torch.rand(2, 3, side, side)
    assert net(x).shape == (2, 7)
    twin = build_image_model(arch, num_classes=7, width=4, variant=variant, levels=None)
    assert not any(isinstance(m, QuantReLU) for m in twin.modules())
    assert sum(isinstance(m, nn.ReLU) for m in twin.modules()) == \
        sum(isinstance(m, QuantReLU) for m in net.modules())


def test_standard_sizes():
    count = lambda m: sum(p.numel() for p in m.parameters() if p.requires_grad)
    # He et al.'s CIFAR ResNet-20 has 0.27 M weights; the per-channel thresholds add a few hundred
    assert 0.26e6 < count(build_image_model("resnet20", num_classes=10)) < 0.28e6
    convs = lambda m: sum(isinstance(c, nn.Conv2d) and c.kernel_size == (3, 3) for c in m.modules())
    assert convs(build_image_model("vgg16", width=8)) == 13
    assert convs(build_image_model("resnet34", width=4, variant="imagenet")) == 32


@pytest.mark.parametrize("arch", IMAGE_ARCHS)
@pytest.mark.parametrize("pool", ["avg", "max"])
@pytest.mark.parametrize("rounding", ["floor", "round", "ceil"])
def test_convert_exact(arch, pool, rounding):
    torch.manual_seed(0)
    variant = "imagenet" if arch == "resnet34" else "cifar"
    net = build_image_model(arch, num_classes=5, width=4, variant=variant, pool=pool,
                            levels=4, rounding=rounding, threshold=0.5).double().eval()
    x = torch.rand(3, 3, 32, 32, dtype=torch.float64) * 2
    rows = compare_levels(net, convert(net), x)
    assert sum(r.mismatched for r in rows) == 0
    # not vacuous: the neurons take at least three of the levels 0..L
    assert torch.cat([M.flatten() for _, M in ann_levels(net, x)]).unique().numel() >= 3


def test_bad_arguments_are_named():
    for kwargs, name in [(dict(variant="mnist"), "variant"), (dict(pool="min"), "pool"),
                         (dict(width=0), "width"), (dict(num_classes=1), "num_classes"),
                         (dict(levels=0), "levels"), (dict(rounding="half"), "rounding")]:
        with pytest.raises((ValueError, TypeError), match=name):
            build_image_model("resnet20", **kwargs)
    with pytest.raises(ValueError, match="arch must be one of"):
        build_image_model("alexnet")
