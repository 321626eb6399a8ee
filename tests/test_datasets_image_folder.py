"""ImageFolder on real JPEG files written here: items, a corrupt file, an escaping symlink."""
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
