"""Small ANNs with QuantReLU activations for the tests: an MLP, a CNN with BN + avg-pool, a residual net."""
import torch
import torch.nn as nn

from sj_qvm import QuantReLU


def _randomize_bn(model: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.4 - 0.2)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) * 0.2)
    return model


def mlp(L, rounding, threshold=1.0):
    return nn.Sequential(nn.Flatten(), nn.Linear(48, 64), QuantReLU(L, rounding, threshold),
                         nn.Linear(64, 32), QuantReLU(L, rounding, threshold), nn.Linear(32, 10))


def cnn(L, rounding, threshold=1.0):
    return _randomize_bn(nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), QuantReLU(L, rounding, threshold),
        nn.AvgPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16),
        QuantReLU(L, rounding, threshold), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        nn.Dropout(0.2), nn.Linear(64, 10)))


class Block(nn.Module):
    """A torchvision-style basic block that reuses one activation module twice."""

    def __init__(self, c, L, rounding, threshold):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.act = QuantReLU(L, rounding, threshold)

    def forward(self, x):
        return self.act(self.bn2(self.conv2(self.act(self.bn1(self.conv1(x))))) + x)


class ResNet(nn.Module):
    def __init__(self, L, rounding, threshold=1.0):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8),
                                  QuantReLU(L, rounding, threshold))
        self.block = Block(8, L, rounding, threshold)
        self.down = nn.Sequential(nn.Conv2d(8, 8, 1, stride=2), QuantReLU(L, rounding, threshold))
        self.fc = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x):
        y = self.block(self.stem(x))
        z = torch.cat([self.down(y), nn.functional.avg_pool2d(y, 2)], dim=1)
        return self.fc(z.view(z.size(0), -1))


def resnet(L, rounding, threshold=1.0):
    return _randomize_bn(ResNet(L, rounding, threshold))


ARCHS = {"mlp": (mlp, (3, 4, 4)), "cnn": (cnn, (3, 8, 8)), "resnet": (resnet, (3, 8, 8))}


def build(arch, L, rounding, dtype=torch.float64, threshold=1.0):
    """``(ann, x)``: an eval-mode ANN and an input batch whose pre-activations span the levels."""
    make, shape = ARCHS[arch]
    ann = make(L, rounding, threshold).eval().to(dtype)
    x = (torch.rand(32, *shape, dtype=dtype) * 2.0 - 0.5)
    return ann, x


def run_recorded(snn, x_seq, *groups):
    """One no-grad run of ``snn`` on ``x_seq [T, B, *]`` after ``reset_net``: ``(y_seq, outputs)``
    where ``outputs[g][k]`` is the (first) output of module ``groups[g][k]``."""
    from sj_qvm._compat import functional
    seen = [dict() for _ in groups]
    hooks = [m.register_forward_hook(lambda mod, i, o, d=d, k=k: d.setdefault(k, o))
             for d, group in zip(seen, groups) for k, m in enumerate(group)]
    try:
        functional.reset_net(snn)
        with torch.no_grad():
            y = snn(x_seq)
    finally:
        for h in hooks:
            h.remove()
    return y, [[d[k] for k in range(len(group))] for d, group in zip(seen, groups)]
