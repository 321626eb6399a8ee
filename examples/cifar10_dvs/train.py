"""QVM on cifar10_dvs: QAT, convert, evaluate at T = 1..16; see README.md beside this file."""
import sys

from sj_qvm.app.pipeline import CIFAR10_DVS, main

if __name__ == "__main__":
    sys.exit(main(CIFAR10_DVS, prog="examples/cifar10_dvs/train.py"))
