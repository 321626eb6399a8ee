"""The pipeline's training samples (sj_qvm.datasets.frames_dataset): sum-pooling keeps the event
count, augmentation moves every frame alike, never changes its input, and flips only when asked."""
import torch

from sj_qvm.datasets.frames_dataset import Frames, augment, to_time_major


def _counts(T=3, size=128, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 5, (T, 2, size, size), generator=g).to(torch.int16)


def test_sum_pooling_keeps_every_event_and_scale_multiplies():
    base = [(_counts(seed=s), s) for s in range(2)]
    for size in (32, 64, 128):
        item, label = Frames(base, size)[1]
        assert item.shape == (3, 2, size, size) and item.dtype == torch.float32 and label == 1
        assert item.sum().item() == base[1][0].sum().item()
    scaled, _ = Frames(base, 32, scale=0.25)[0]
    assert torch.equal(scaled, Frames(base, 32)[0][0] * 0.25)
    assert len(Frames(base, 32)) == 2


def _dot(T=4, H=32, y=16, x=5):
    """``[T, 2, H, H]``: one event at (y, x) in channel 0, with count t + 1 in frame t."""
    f = torch.zeros(T, 2, H, H)
    f[:, 0, y, x] = torch.arange(1, T + 1, dtype=torch.float32)
    return f


def test_augment_shifts_all_frames_alike_within_an_eighth_and_keeps_its_input():
    torch.manual_seed(0)
    f = _dot()
    before = f.clone()
    m = 32 // 8
    for _ in range(50):
        out = augment(f, flip=False)
        assert out.shape == f.shape and torch.equal(f, before)
        (t, c, y, x), = out[:1].nonzero().tolist()
        assert c == 0 and abs(y - 16) <= m and abs(x - 5) <= m  # never flipped to x near 26
        # every frame moved by the same (dy, dx): frame t is (t + 1) times frame 0
        assert torch.equal(out, out[:1] * torch.arange(1, 5).view(4, 1, 1, 1))


def test_augment_flips_only_when_asked():
    torch.manual_seed(0)
    xs = {augment(_dot(), flip=True)[0, 0].nonzero()[0, 1].item() for _ in range(50)}
    assert any(x > 20 for x in xs) and any(x < 10 for x in xs)  # 31 - 5 = 26 after a flip


def test_training_items_are_augmented_afresh_and_test_items_are_not():
    base = [(_dot(H=128, y=64, x=64), 0)]
    torch.manual_seed(0)
    train = Frames(base, 32, train=True)
    items = [train[0][0] for _ in range(20)]
    assert any(not torch.equal(items[0], a) for a in items[1:])
    test = Frames(base, 32)
    assert torch.equal(test[0][0], test[0][0]) and test[0][0].sum() == _dot().sum()


def test_to_time_major():
    x = torch.arange(24.0).view(2, 3, 4)
    y = to_time_major(x)
    assert y.shape == (3, 2, 4) and y.is_contiguous() and torch.equal(y[1, 0], x[0, 1])
