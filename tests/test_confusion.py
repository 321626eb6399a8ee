"""The confusion matrix (sj_qvm.accuracy) and its figure (sj_qvm.plots.plot_confusion)."""
import math

import pytest
import torch

from sj_qvm.accuracy import confusion_matrix, pair_accuracy
from sj_qvm.plots import plot_confusion


def test_rows_are_true_classes_and_every_sample_counts_once():
    target = torch.tensor([0, 0, 1, 2, 2, 2])
    pred = torch.tensor([0, 1, 1, 2, 0, 2])
    c = confusion_matrix(pred, target, 4)
    assert c.dtype == torch.int64 and c.shape == (4, 4) and c.sum() == 6
    assert c.tolist() == [[1, 1, 0, 0], [0, 1, 0, 0], [1, 0, 2, 0], [0, 0, 0, 0]]
    assert c.trace() == (pred == target).sum()
    assert confusion_matrix(torch.zeros(0), torch.zeros(0), 3).sum() == 0


def test_pair_accuracy_counts_any_confusion_as_wrong():
    c = torch.tensor([[5, 1, 0], [2, 3, 1], [0, 0, 4]])
    assert pair_accuracy(c, (0, 1)) == (5 + 3) / 12  # row 1's sample predicted as 2 counts too
    assert math.isnan(pair_accuracy(torch.zeros(3, 3, dtype=torch.long), (0, 1)))


@pytest.mark.parametrize("pred, target, match", [
    (torch.tensor([0, 3]), torch.tensor([0, 1]), r"pred must lie in 0..2"),
    (torch.tensor([0, 1]), torch.tensor([-1, 1]), r"target must lie in 0..2"),
    (torch.tensor([0, 1]), torch.tensor([0]), "as many samples"),
])
def test_bad_labels_are_refused(pred, target, match):
    with pytest.raises(ValueError, match=match):
        confusion_matrix(pred, target, 3)


def test_plot_writes_a_png_with_the_class_names(tmp_path):
    c = torch.tensor([[3, 1], [0, 4]])
    ax = plot_confusion(c, tmp_path / "c.png", classes=("cw", "ccw"), title="t")
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["cw", "ccw"]
    assert "accuracy 87.5%" in ax.get_title()
    with pytest.raises(ValueError, match="square matrix"):
        plot_confusion(torch.zeros(2, 3), tmp_path / "x.png")
    with pytest.raises(ValueError, match="name the 2 classes"):
        plot_confusion(c, tmp_path / "x.png", classes=("a",))
