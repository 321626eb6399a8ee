"""Plot emulated DVS recordings: an image, then its events in T frames (ON red, OFF blue).

    python examples/cifar10_dvs/plot_emulated.py [--out emulated_frames.png] [--frames 4]

Rows: a 32x32 crop of one of scikit-learn's sample photographs at the default settings (fitted to
CIFAR10-DVS), and a digit at the default settings and at the pipeline's ``EMULATED_SETTINGS``.
Frames are split by event number, as the pipeline integrates them.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from bench_emulator import photo_crops  # noqa: E402

from sj_qvm.app.registry import EMULATED_SETTINGS  # noqa: E402
from sj_qvm.datasets import DVS128_SENSOR_SIZE, emulate_dvs, events_to_frames  # noqa: E402
from sj_qvm.datasets.image_sources import load_digit_images  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path(__file__).with_name("emulated_frames.png"))
    p.add_argument("--frames", type=int, default=4)
    args = p.parse_args()
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    digit = load_digit_images()[0][0]
    rows = [("photo crop, defaults", photo_crops(1)[0], {}), ("digit, defaults", digit, {}),
            ("digit, EMULATED_SETTINGS", digit, EMULATED_SETTINGS)]
    fig, axes = plt.subplots(len(rows), args.frames + 1, figsize=(2 * (args.frames + 1), 2.1 * len(rows)))
    for row, (title, image, settings) in zip(axes, rows):
        events = emulate_dvs(image, **settings)
        frames = events_to_frames(events, args.frames, "number", DVS128_SENSOR_SIZE)  # [T, 2, H, W]
        row[0].imshow(image, cmap="gray", vmin=0, vmax=1)
        row[0].set_title(f"{title}\n{len(events):,} events", fontsize=8)
        scale = max(1.0, float(np.percentile(frames[frames > 0], 99))) if frames.any() else 1.0
        for i, ax in enumerate(row[1:]):
            rgb = np.zeros(frames.shape[2:] + (3,))
            rgb[..., 0] = np.clip(frames[i, 1] / scale, 0, 1)  # ON
            rgb[..., 2] = np.clip(frames[i, 0] / scale, 0, 1)  # OFF
            ax.imshow(rgb)
            ax.set_title(f"frame {i + 1}", fontsize=8)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(args.out, dpi=80)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
