"""QVM on CIFAR-100 / CIFAR-10 (--dataset): QAT, convert, evaluate over T, V0; see README.md."""
import sys

from sj_qvm.app.static import CIFAR10_SPEC, CIFAR100_SPEC, main

if __name__ == "__main__":
    sys.exit(main((CIFAR100_SPEC, CIFAR10_SPEC), prog="examples/cifar/train.py"))
