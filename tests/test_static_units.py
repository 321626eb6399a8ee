"""The static pipeline's parts: --paper presets, Cutout, transforms, loader options, tables."""
import numpy as np
import pytest
import torch

from sj_qvm.app import resources
from sj_qvm.app.static import CIFAR10_SPEC, CIFAR100_SPEC, IMAGENET_SPEC
from sj_qvm.app.static.args import PAPER, parse
from sj_qvm.app.static.data import Cutout, loader_options, eval_transform, train_transform
from sj_qvm.app.static.tables import markdown

CIFAR = (CIFAR100_SPEC, CIFAR10_SPEC)


@pytest.mark.parametrize("dataset, arch, L, batch, wd", [
    ("cifar100", "vgg16", 8, 300, 5e-4), ("cifar100", "resnet20", 8, 300, 5e-4),
    ("cifar100", "resnet18", 4, 300, 5e-4), ("imagenet", "vgg16", 16, 128, 1e-4),
    ("imagenet", "resnet34", 8, 128, 1e-4), ("imagenet", "tv_resnet34", 8, 128, 1e-4)])
def test_paper_presets(dataset, arch, L, batch, wd, monkeypatch):
    # The presets, on a device of the paper's size (the memory refusal: tests/test_resources.py).
    monkeypatch.setattr(resources, "memory_bound", lambda device: (1 << 40, "test device"))
    specs = (IMAGENET_SPEC,) if dataset == "imagenet" else CIFAR
    a = parse(specs, ["--root", "r", "--dataset", dataset, "--arch", arch, "--paper"])
    assert (a.levels, a.rounding, a.batch_size, a.weight_decay) == (L, "round", batch, wd)
    assert (a.optimizer, a.lr, a.epochs) == ("sgd", 0.1, 300)
    # --levels and --rounding given explicitly win over the table's.
    b = parse(specs, ["--root", "r", "--dataset", dataset, "--arch", arch, "--paper",
                      "--levels", "6", "--rounding", "floor"])
    assert (b.levels, b.rounding, b.batch_size) == (6, "floor", batch)


def test_paper_notes_the_inconsistencies():
    assert "L = 8" in PAPER[("imagenet", "vgg16")][2] and "L = 16" in PAPER[("imagenet", "vgg16")][2]
    assert "L = 8" in PAPER[("cifar100", "resnet18")][2]


@pytest.mark.parametrize("argv, needle", [
    (["--dataset", "cifar10", "--paper"], "no cifar10"),
    (["--levels", "0"], "--levels"), (["--cutout", "40"], "--cutout"),
    (["--workers", "-1"], "--workers"), (["--arch", "vgg19"], "--arch"),
    (["--eval-time-steps", "0"], "--eval-time-steps"), (["--test-samples", "0"], "--test-samples")])
def test_bad_arguments_exit_2_naming_the_flag(argv, needle, capsys):
    with pytest.raises(SystemExit) as e:
        parse(CIFAR, ["--root", "r", *argv], prog="p")
    err = capsys.readouterr().err
    assert e.value.code == 2 and needle in err and len(err.strip().splitlines()) == 1


def test_defaults_follow_the_dataset():
    a = parse((IMAGENET_SPEC,), ["--root", "r"])
    assert (a.image_size, a.cutout, a.arch, a.width, a.levels) == (224, 112, "resnet34", 64, 8)
    c = parse(CIFAR, ["--root", "r"])
    assert (c.dataset, c.image_size, c.cutout, c.arch, c.width) == ("cifar100", 32, 16,
                                                                     "resnet20", 16)


def test_cutout_zeroes_one_clipped_square_and_keeps_its_input():
    torch.manual_seed(0)
    img = torch.rand(3, 32, 32) + 0.5  # no zero pixel of its own
    before = img.clone()
    cut = Cutout(16)
    for _ in range(200):
        out = cut(img)
        assert out.shape == img.shape and torch.equal(img, before)
        zero = (out == 0).all(0)
        assert torch.equal((out == 0).any(0), zero)  # all channels at once
        rows, cols = zero.any(1).nonzero().flatten(), zero.any(0).nonzero().flatten()
        h, w = len(rows), len(cols)
        assert zero.sum() == h * w  # one rectangle ...
        assert rows[-1] - rows[0] + 1 == h and cols[-1] - cols[0] + 1 == w
        assert 8 <= h <= 16 and 8 <= w <= 16  # ... at least half the square inside the image
        assert torch.equal(out[:, ~zero], img[:, ~zero])
    assert Cutout(0)(img) is img
    with pytest.raises(ValueError, match="cutout length"):
        Cutout(-1)


@pytest.mark.parametrize("spec, size", [(CIFAR100_SPEC, 32), (IMAGENET_SPEC, 64)])
def test_transforms_give_the_input_size(spec, size):
    from PIL import Image
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8))
    if spec is CIFAR100_SPEC:
        img = img.resize((32, 32))
    torch.manual_seed(0)
    x = train_transform(spec, size, size // 2)(img)
    assert x.shape == (3, size, size) and x.dtype == torch.float32
    t = eval_transform(spec, size)
    assert torch.equal(t(img), t(img)) and t(img).shape == (3, size, size)


def test_loader_options():
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert loader_options(0, cpu) == {"num_workers": 0, "pin_memory": False}
    assert loader_options(4, gpu) == {"num_workers": 4, "pin_memory": True,
                                      "persistent_workers": True, "prefetch_factor": 4}
    with pytest.raises(ValueError, match="--workers"):
        loader_options(-2, cpu)


def test_tables_mark_T_equals_L_and_show_the_paper_row():
    accs = {"1": 0.1, "4": 0.5, "8": 0.6}
    res = {"dataset": "cifar100", "arch": "resnet20", "levels": 8, "rounding": "round",
           "test_samples": 10, "ann_accuracy": 0.6, "mismatched_neurons": 0,
           "report_neurons": 99, "mismatched_neurons_float32": 0,
           "snn_accuracy": {"expected": accs, "instant": accs},
           "v0_ablation": {c: {v: accs for v in ("floor", "round", "ceil")}
                           for c in ("expected", "instant")}}
    md = markdown(res)
    assert "| resnet20 | QVM (L=8, round, expected current) | 60.00 | 10.00 | 50.00 | 60.00* |" in md
    assert "| resnet20 | paper's QVM (L=8), Table 2 | 68.25 | 11.39 | 64.57 | 68.24 |" in md
    assert md.count("60.00*") == 2 + 2  # the main rows, and the matched V0 rows of Table 4
    assert "| round | 60.00 | 0 |" in md and "| | | θ |" in md


def test_figure5_one_panel_per_level_one_line_per_run(tmp_path, capsys):
    import json
    pytest.importorskip("matplotlib")
    from sj_qvm.app.static.figure5 import load_results, main, plot_figure5
    runs = []
    for k, (arch, L) in enumerate((("vgg16", 4), ("resnet20", 4), ("resnet18", 8))):
        accs = {str(T): (k + T) / 100 for T in (1, 2, 4, 8)}
        runs.append({"arch": arch, "dataset": "cifar100", "levels": L,
                     "snn_accuracy": {"expected": accs, "instant": accs}})
        (tmp_path / f"{k}.json").write_text(json.dumps(runs[-1]))
    axes = plot_figure5(load_results([tmp_path / f"{k}.json" for k in range(3)]),
                        tmp_path / "f.png")
    assert len(axes) == 2 and [len(ax.get_lines()) - 1 for ax in axes] == [2, 1]  # + T = L line
    assert list(axes[1].get_lines()[0].get_ydata()) == [100 * (2 + T) / 100 for T in (1, 2, 4, 8)]
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"
    (tmp_path / "bad.json").write_text('{"levels": 4}')
    assert main([str(tmp_path / "0.json"), str(tmp_path / "bad.json"), "--out",
                 str(tmp_path / "g.png")]) == 2
    err = capsys.readouterr().err
    assert "bad.json" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "g.png").exists()
