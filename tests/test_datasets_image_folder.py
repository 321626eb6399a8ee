"""ImageFolder on real JPEG files written here: items, a corrupt file or a decompression bomb,
escaping symlinks and symlink loops."""
import signal
import warnings

import numpy as np
import pytest

from sj_qvm.datasets.image_folder import ImageFolder

Image = pytest.importorskip("PIL.Image")


def write_folder(root, classes=("cat", "dog"), per_class=3, size=(20, 16)):
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / c / f"{i}.JPEG", format="JPEG", quality=90)


def test_items_and_classes(tmp_path):
    write_folder(tmp_path / "train")
    ds = ImageFolder(tmp_path / "train")
    assert ds.classes == ["cat", "dog"] and ds.num_classes == 2 and len(ds) == 6
    img, label = ds[4]
    assert img.mode == "RGB" and img.size == (20, 16) and label == 1


def test_truncated_jpeg_is_named(tmp_path):
    write_folder(tmp_path / "val")
    bad = tmp_path / "val" / "dog" / "1.JPEG"
    raw = bad.read_bytes()
    bad.write_bytes(raw[: len(raw) // 3])
    ds = ImageFolder(tmp_path / "val")
    index = [p for p, _ in ds.samples].index(str(bad))
    with pytest.raises(ValueError, match=r"dog/1\.JPEG: not a readable image \(file of \d+ bytes\)"):
        ds[index]
    bad.write_bytes(b"not a jpeg at all")
    with pytest.raises(ValueError, match="1.JPEG"):
        ds[index]


def test_symlink_out_of_root_is_refused(tmp_path):
    write_folder(tmp_path / "outside", classes=("x",), per_class=1)
    write_folder(tmp_path / "train")
    (tmp_path / "train" / "cat" / "link.JPEG").symlink_to(tmp_path / "outside" / "x" / "0.JPEG")
    with pytest.raises(ValueError, match="resolves outside"):
        ImageFolder(tmp_path / "train")


def test_missing_or_empty_root_shows_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match="ROOT/train/<class>"):
        ImageFolder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="ROOT/train/<class>"):
        ImageFolder(tmp_path / "empty")


def _within(seconds, fn):
    """``fn()``, failing (not hanging) when it takes longer than ``seconds``."""
    def expired(*_):
        raise TimeoutError(f"still running after {seconds} s")
    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        return fn()
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_symlink_loops_finish_and_keep_labels(tmp_path):
    root = tmp_path / "train"
    write_folder(root)
    plain = ImageFolder(root).samples
    for link in ("cat/u1", "cat/u2", "dog/u1"):      # each lists the root again, class by class
        (root / link).symlink_to("..")
    (root / "cat" / "sub").mkdir()
    (root / "cat" / "sub" / "up").symlink_to("..")   # back into its own class folder: a loop
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        ds = _within(20, lambda: ImageFolder(root))
    assert ds.samples == plain                       # each image once, under its own class
    assert sorted(str(w.message).split(":")[0][len(str(root)) + 1:] for w in warned) == \
        ["cat/u1", "cat/u2", "dog/u1"]               # the loop inside cat/ needs no warning


def test_links_inside_a_class_are_followed_once(tmp_path):
    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset
    root = tmp_path / "train"
    write_folder(root)
    write_folder(root / "cat" / "deep", classes=("er", "est"), per_class=2)
    classes = {"cat": 0, "dog": 1}
    assert ImageFolder.make_dataset(str(root), classes, IMG_EXTENSIONS) == \
        make_dataset(str(root), classes, IMG_EXTENSIONS)  # torchvision's order without links
    (root / "cat" / "alias").symlink_to("deep/er")   # the same folder twice
    (root / "dog" / "more").symlink_to(root / "cat" / "deep" / "est", target_is_directory=True)
    with pytest.warns(UserWarning, match=r"dog/more: a link to .*cat/deep/est, outside the class"):
        samples = ImageFolder(root).samples
    assert len(samples) == 10
    assert sum("/alias/" in p or "/deep/er/" in p for p, _ in samples) == 2
    assert sorted(p.rsplit("/", 2)[-2] for p, c in samples if c == 1) == ["dog"] * 3


def test_folder_link_out_of_root_is_refused(tmp_path):
    write_folder(tmp_path / "outside", classes=("x",), per_class=1)
    write_folder(tmp_path / "train")
    (tmp_path / "train" / "cat" / "ext").symlink_to(tmp_path / "outside")
    with pytest.raises(ValueError, match=r"cat/ext: resolves outside"):
        ImageFolder(tmp_path / "train")


def test_decompression_bomb_is_named(tmp_path, monkeypatch):
    write_folder(tmp_path / "val", per_class=1)      # 20 x 16 = 320 pixels each
    ds = ImageFolder(tmp_path / "val")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)   # over twice the bound: PIL's error
    with pytest.raises(ValueError, match=r"cat/0\.JPEG: not a readable image .*decompression bomb"):
        ds[0]
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 300)   # over the bound: PIL's warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=r"dog/0\.JPEG: not a readable image .*decompression"):
            ds[1]


def test_unreadable_image_in_a_loader_worker_is_one_short_line(tmp_path):
    import torch
    from torchvision.transforms import ToTensor
    write_folder(tmp_path / "val")
    bad = tmp_path / "val" / "cat" / "1.JPEG"
    bad.write_bytes(b"GIF89a not really")
    loader = torch.utils.data.DataLoader(ImageFolder(tmp_path / "val", transform=ToTensor()),
                                         batch_size=2, num_workers=1)
    with pytest.raises(ValueError) as error:
        list(loader)
    msg = str(error.value)
    assert msg == (f"{bad}: not a readable image (file of 17 bytes): no image format PIL knows "
                   "(in DataLoader worker process 0)")
    assert "Traceback" in "".join(error.value.__notes__)   # the worker's, for a full report
