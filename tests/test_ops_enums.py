"""The kernels' flags and surrogate ids have one home, if_loop.cuh: the Python side reads them."""
import re
from pathlib import Path

import pytest

from sj_qvm.ops.if_loop import enums, launch, surrogates

FLAGS = ("F_STRICT", "F_EXPECTED", "F_STORE_V_SEQ", "F_STORE_H", "F_THETA_TENSOR", "F_V0_TENSOR",
         "B_GRAD_V", "B_GRAD_V_SEQ", "B_DETACH_RESET", "B_NEED_V0", "B_NEED_THETA")


def test_launch_and_surrogates_use_the_header_values():
    for name in FLAGS:
        assert getattr(launch, name) == enums.VALUES[name], name
    for name in ("SG_NONE", "SG_SIGMOID", "SG_ATAN"):
        assert getattr(surrogates, name) == enums.VALUES[name], name


def test_flags_are_distinct_bits_and_ids_distinct():
    bits = [enums.VALUES[n] for n in FLAGS]
    assert all(b > 0 and b & (b - 1) == 0 for b in bits) and len(set(bits)) == len(bits)
    ids = [enums.VALUES[n] for n in ("SG_NONE", "SG_SIGMOID", "SG_ATAN")]
    assert len(set(ids)) == 3


def test_the_compiled_cpu_kernel_reads_the_same_surrogate_ids():
    """_cpu_kernels.h and _cpu.c select ATan by its id and accept the ids 0..1 (Sigmoid, ATan)."""
    ops = Path(launch.__file__).parents[1]
    header = (ops / "_cpu_kernels.h").read_text()
    source = (ops / "_cpu.c").read_text()
    (atan,) = re.findall(r"atan_sg = t->sg_id == (-?\d+)", header)
    assert int(atan) == surrogates.SG_ATAN
    (low, high) = re.findall(r"sg_id < (-?\d+) \|\| sg_id > (-?\d+)", source)[0]
    assert {int(low), int(high)} == {surrogates.SG_SIGMOID, surrogates.SG_ATAN}


def test_parse_reads_enums_only_and_refuses_a_name_twice():
    text = """
    // enum { F_COMMENTED = 99 };
    enum { A = 1,  // one
           B = -2 };
    int C = 3;
    /* enum { D = 4 }; */
    enum { E = 8 };
    """
    assert enums.parse(text) == {"A": 1, "B": -2, "E": 8}
    with pytest.raises(ValueError, match="defined twice"):
        enums.parse("enum { A = 1 }; enum { A = 2 };")
