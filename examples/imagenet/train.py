"""QVM on ImageNet-1k (ImageFolder train/ val/): QAT, convert, evaluate over T, V0; see README.md."""
import sys

from sj_qvm.app.static import IMAGENET_SPEC, main

if __name__ == "__main__":
    sys.exit(main((IMAGENET_SPEC,), prog="examples/imagenet/train.py"))
