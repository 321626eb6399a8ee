"""Does an input representation let the ANN read the order of events? The test-split accuracy and
the accuracy on each clockwise / counter-clockwise pair of DVS128 Gesture, per epoch.

The DVS pipeline's model, QAT loop (``sj_qvm.qat.fit``), frames and augmentation on a synthetic
release (``write_dvs_gesture``), ANN only: the converted SNN's figures are the pipeline's own
(``examples/dvs_gesture/train.py --input ...``). One thread, so that runs side by side do not
disturb each other's arithmetic.

Usage: python benchmarks/input_order.py --input stack --frames 16 --size 32 --epochs 20 \\
           [--users 29] [--root DIR]
``--users 29`` writes users 1-23 (training) and 24-29 (test) in three lightings, the size of the
real release (759 training, 198 test samples); ``--users 6`` is the demo's release (132, 66).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from sj_qvm.accuracy import confusion_matrix, pair_accuracy
from sj_qvm.app.evaluate import predict_ann
from sj_qvm.app.registry import DVS_GESTURE as SPEC
from sj_qvm.datasets.frames_dataset import Frames
from sj_qvm.datasets.representations import representation
from sj_qvm.datasets.synthetic import write_dvs_gesture
from sj_qvm.models import build_model
from sj_qvm.qat import fit


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--input", default="stack")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--width", type=int, default=8)
    p.add_argument("--lr", type=float, default=0.003)
    p.add_argument("--users", type=int, default=29, choices=(6, 29))
    p.add_argument("--root", type=Path, default=None,
                   help="where the release is (written if absent)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    root = args.root or Path(tempfile.mkdtemp())
    if not (root / "DvsGesture").exists():
        users = tuple(range(1, 30)) if args.users == 29 else (1, 2, 3, 4, 24, 25)
        write_dvs_gesture(root, users=users, seed=0)
    train = Frames(SPEC.make(root, True, args.frames), args.size, train=True)
    test = Frames(SPEC.make(root, False, args.frames), args.size)
    rep = representation(args.input)
    torch.manual_seed(0)
    model = build_model("vgg", in_channels=rep.channels(args.frames), num_classes=SPEC.num_classes,
                        levels=4, rounding="round", width=args.width)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.epochs)
    test_loader = torch.utils.data.DataLoader(test, batch_size=16)
    t0 = time.time()
    confusion = None

    def batches(epoch):
        torch.manual_seed(epoch)  # the augmentation's draws
        g = torch.Generator().manual_seed(epoch)
        return torch.utils.data.DataLoader(train, batch_size=16, shuffle=True, generator=g)

    def on_epoch(row):
        nonlocal confusion
        pred, y = predict_ann(model, test_loader, "cpu", rep)
        confusion = confusion_matrix(pred, y, SPEC.num_classes)
        pairs = " ".join(f"{100 * pair_accuracy(confusion, pr):.1f}" for pr in SPEC.order_pairs)
        print(f"epoch {row['epoch']}: train {100 * row['train_acc']:.1f}% test "
              f"{100 * (pred == y).double().mean():.1f}% pairs {pairs} ({time.time() - t0:.0f} s)",
              flush=True)

    fit(model, opt, batches, args.epochs, scheduler=sched, prepare=rep, on_epoch=on_epoch,
        progress=False)
    print(f"--input {args.input}, {args.frames} frames, {args.size}x{args.size}: confusion "
          "(rows: true class, columns: predicted)")
    for row in confusion.tolist():
        print("  " + " ".join(f"{v:2d}" for v in row))


if __name__ == "__main__":
    main()
