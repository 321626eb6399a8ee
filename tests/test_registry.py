"""The DVS pipeline's dataset registry: help text from the dataset classes, versioned releases."""
from sj_qvm.app import registry
from sj_qvm.datasets import CIFAR10DVS, DVSGesture
from sj_qvm.datasets.synthetic import RELEASE_VERSION


def test_specs_read_the_dataset_classes():
    assert registry.DVS_GESTURE.num_classes == DVSGesture.num_classes == 11
    assert registry.CIFAR10_DVS.num_classes == CIFAR10DVS.num_classes == 10
    assert DVSGesture.layout_help("ROOT") in registry.DVS_GESTURE.real_data_help
    assert CIFAR10DVS.layout_help("ROOT") in registry.CIFAR10_DVS.real_data_help


def test_release_written_once_per_version(tmp_path):
    calls = []
    write = lambda: calls.append(1)
    registry._write_once(tmp_path, write)
    registry._write_once(tmp_path, write)
    assert len(calls) == 1
    (tmp_path / ".sj_qvm_complete").write_bytes(b"complete\n")  # a release of version 1
    registry._write_once(tmp_path, write)
    assert len(calls) == 2
    assert (tmp_path / ".sj_qvm_complete").read_bytes() == f"complete v{RELEASE_VERSION}\n".encode()
