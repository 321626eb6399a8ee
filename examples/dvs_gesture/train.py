"""QVM on dvs_gesture: QAT, convert, evaluate at T = 1..16; see README.md beside this file."""
import sys

from sj_qvm.app.pipeline import DVS_GESTURE, main

if __name__ == "__main__":
    sys.exit(main(DVS_GESTURE, prog="examples/dvs_gesture/train.py"))
