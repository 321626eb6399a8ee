"""The trained ANNs and evaluators that ``bench_conversion.py`` compares conversion routes on.

* ``digits_sample_cnn``: SpikingJelly 2.x's own sample ``mnist_cnn.CNN`` (or the same layers on
  0.14, which ships no sample models), trained as a float ReLU ANN on scikit-learn's real
  handwritten digits, upsampled from 8x8 to 28x28 (the CNN's MNIST input size).
* ``dvs_vgg``: the DVS pipeline's ``vgg`` on the synthetic DVS128-Gesture release, as a plain
  ReLU ANN on the mean event frame; ``dvs_sequences`` gives the same release as frame sequences
  for streaming, one frame per step (``stream_sj``, ``stream_qvm``).

Each returns ``(ann, calib_loader, finetune_loader, test_x, test_y)``; training is seeded, so the
same ANN comes out every run.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from sj_qvm import _compat


def _sample_cnn() -> nn.Module:
    ctor = _compat.sample_models().get("mnist_cnn")
    if ctor is not None:
        return ctor()
    # SpikingJelly 0.14 ships no sample models: the same layers as 2.x's mnist_cnn.CNN.
    layers = []
    for c_in in (1, 32, 32):
        layers += [nn.Conv2d(c_in, 32, 3, 1), nn.BatchNorm2d(32), nn.ReLU(), nn.AvgPool2d(2, 2)]
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(32, 10))


def train_float(ann: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float = 3e-3,
                batch_size: int = 64, seed: int = 0) -> nn.Module:
    """Adam + cosine schedule, cross-entropy; deterministic for a given seed."""
    torch.manual_seed(seed)
    opt = torch.optim.Adam(ann.parameters(), lr=lr)
    steps = epochs * ((len(x) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        ann.train()
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), batch_size):
            idx = perm[i:i + batch_size]
            loss = F.cross_entropy(ann(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return ann.eval()


def _loaders(x_tr, y_tr, batch_size: int = 64, seed: int = 0):
    """``(calibration loader: the training split in order, fine-tune loader: shuffled)``."""
    calib = DataLoader(TensorDataset(x_tr, y_tr), batch_size=batch_size)
    tune = DataLoader(TensorDataset(x_tr, y_tr), batch_size=batch_size, shuffle=True,
                      generator=torch.Generator().manual_seed(seed))
    return calib, tune


def digits_sample_cnn(epochs: int = 12, seed: int = 0):
    from sj_qvm.app.digits import load_digits_tensors
    x_tr, y_tr, x_te, y_te = load_digits_tensors(seed)
    up = lambda x: F.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False)
    x_tr, x_te = up(x_tr), up(x_te)
    torch.manual_seed(seed)
    ann = train_float(_sample_cnn(), x_tr, y_tr, epochs, seed=seed)
    return (ann, *_loaders(x_tr, y_tr, seed=seed), x_te, y_te)


def dvs_vgg(epochs: int = 10, seed: int = 0, root=None):
    """The DVS demo's ``vgg`` as a float ReLU ANN on mean frames of the synthetic release."""
    import tempfile

    from sj_qvm.datasets.synthetic import write_dvs_gesture
    from sj_qvm.models import build_model
    root = root or tempfile.mkdtemp(prefix="sjqvm-bench-")
    write_dvs_gesture(root)
    x_tr, y_tr = dvs_sequences(root, True).mean(0), _dvs_labels(root, True)
    x_te, y_te = dvs_sequences(root, False).mean(0), _dvs_labels(root, False)
    torch.manual_seed(seed)
    ann = build_model("vgg", num_classes=11, in_channels=2, levels=None)
    ann = train_float(ann, x_tr, y_tr, epochs, batch_size=16, seed=seed)
    return (ann, *_loaders(x_tr, y_tr, batch_size=16, seed=seed), x_te, y_te)


def _dvs_labels(root, train: bool) -> torch.Tensor:
    from sj_qvm.datasets import DVSGesture
    ds = DVSGesture(root, train=train, frames_number=4, split_by="number")
    return torch.as_tensor([int(ds[i][1]) for i in range(len(ds))])


def dvs_sequences(root, train: bool, time_steps: int = 4) -> torch.Tensor:
    """The release's samples as frame sequences ``[T, N, 2, 64, 64]`` for streaming, one frame per
    step: the events integrated into T frames by number, sum-pooled 2x2, scaled by T / 4 and
    divided by each sample's largest mean-frame value, so that their mean over T is the ANN's
    input (the mean of 4 frames, normalised the same way) for every T."""
    from sj_qvm.datasets import DVSGesture
    ds = DVSGesture(root, train=train, frames_number=time_steps, split_by="number")
    x = torch.stack([torch.as_tensor(ds[i][0], dtype=torch.float32) for i in range(len(ds))])
    x = F.avg_pool2d(x.flatten(0, 1), 2).unflatten(0, x.shape[:2]) * (time_steps / 4)
    norm = x.mean(1).amax(dim=(1, 2, 3)).clamp(min=1).view(-1, 1, 1, 1, 1)
    return (x / norm).transpose(0, 1).contiguous()


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return (logits.argmax(1) == y).float().mean().item() * 100


@torch.no_grad()
def eval_ann(ann: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return accuracy(ann.eval()(x), y)


@torch.no_grad()
def eval_qvm(snn: nn.Module, x: torch.Tensor, y: torch.Tensor, T: int) -> float:
    """A :class:`~sj_qvm.convert.QVMNetwork` on the static input repeated T times."""
    _compat.reset_net(snn)
    out = snn(x.unsqueeze(0).expand(T, *x.shape).contiguous()).mean(0)
    _compat.reset_net(snn)
    return accuracy(out, y)


@torch.no_grad()
def eval_sj(snn: nn.Module, x: torch.Tensor, y: torch.Tensor, T: int) -> float:
    """A SpikingJelly-converted single-step SNN, fed the static input at every step."""
    _compat.reset_net(snn)
    out = sum(snn(x) for _ in range(T)) / T
    _compat.reset_net(snn)
    return accuracy(out, y)


@torch.no_grad()
def stream_sj(snn: nn.Module, x_seq: torch.Tensor, y: torch.Tensor) -> float:
    """A SpikingJelly-converted single-step SNN streamed ``x_seq: [T, N, *]``, a frame a step."""
    _compat.reset_net(snn)
    out = sum(snn(x) for x in x_seq) / len(x_seq)
    _compat.reset_net(snn)
    return accuracy(out, y)


@torch.no_grad()
def stream_qvm(snn: nn.Module, x_seq: torch.Tensor, y: torch.Tensor) -> float:
    """A :class:`~sj_qvm.convert.QVMNetwork` on the frame sequence ``x_seq: [T, N, *]``."""
    _compat.reset_net(snn)
    out = snn(x_seq).mean(0)
    _compat.reset_net(snn)
    return accuracy(out, y)
