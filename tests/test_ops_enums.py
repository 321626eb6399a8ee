"""Every id and flag the kernels read has one home, if_loop/qvm_enums.h: the CUDA and the CPU
kernels include it, the Python side parses it, and a compiled extension built from another
header is refused."""
import re
from pathlib import Path

import pytest
import torch

from sj_qvm.checks import ROUNDINGS
from sj_qvm.ops import enums, native
from sj_qvm.ops.if_loop import launch, surrogates

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


def test_every_kernel_source_includes_the_header_and_names_its_ids():
    """No kernel source compares an id with a bare number: the CPU kernels read rounding, dtype
    and surrogate by their names, the CUDA header its flags, all from qvm_enums.h."""
    ops = Path(launch.__file__).parents[1]
    sources = {name: (ops / name).read_text() for name in
               ("_cpu.c", "_cpu_kernels.h", "_cpu_quant.h", "if_loop/if_loop.cuh")}
    assert '#include "if_loop/qvm_enums.h"' in sources["_cpu_kernels.h"]
    assert '#include "qvm_enums.h"' in sources["if_loop/if_loop.cuh"]
    for name, text in sources.items():
        assert not re.search(r"\benum\s*\{", text), name  # no second home
        assert not re.search(r"(rounding|sg_id|dtype|\br) (==|!=|<=|>=|<|>) ?-?\d", text), name
    assert "t->sg_id == SG_ATAN" in sources["_cpu_kernels.h"]
    assert "r == ROUND_HALF_UP" in sources["_cpu_quant.h"]


def test_rounding_ids_follow_the_header_not_a_tuple_order():
    assert [enums.ROUNDING_IDS[r] for r in ROUNDINGS] == [
        enums.VALUES["ROUND_FLOOR"], enums.VALUES["ROUND_HALF_UP"], enums.VALUES["ROUND_CEIL"]]
    assert native.DTYPES == {torch.float32: enums.VALUES["DT_F32"],
                             torch.float64: enums.VALUES["DT_F64"]}


@pytest.mark.skipif(not native.available(), reason=f"sj_qvm.ops._cpu not built: "
                                                   f"{native.IMPORT_ERROR}")
def test_the_guard_refuses_an_extension_built_from_another_header():
    built = dict(native._module.ENUMS)
    enums.guard(built)  # the build in use agrees with the header
    assert set(built) >= {"ROUND_FLOOR", "ROUND_HALF_UP", "ROUND_CEIL", "DT_F32", "SG_ATAN"}
    # The header edited (half-up and ceil swapped) without a rebuild:
    edited = enums.HEADER.read_text().replace("ROUND_HALF_UP = 1, ROUND_CEIL = 2",
                                              "ROUND_HALF_UP = 2, ROUND_CEIL = 1")
    assert edited != enums.HEADER.read_text()
    with pytest.raises(ValueError, match="has ROUND_CEIL = 1, the compiled module was built "
                                         "with 2; rebuild it"):
        enums.guard(built, enums.parse(edited))
    with pytest.raises(ValueError, match="has SG_ATAN = 1, the compiled module was built with 7"):
        enums.guard(dict(built, SG_ATAN=7))


def test_the_guard_runs_at_import(tmp_path):
    """native.py refuses (IMPORT_ERROR, torch paths) an extension whose ENUMS disagree."""
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415
    if not native.available():
        pytest.skip("sj_qvm.ops._cpu not built")
    code = ("import importlib, sj_qvm.ops.enums as e, sj_qvm.ops.native as n\n"
            "e.VALUES = dict(e.VALUES, DT_F64=3)  # as if the header said so\n"
            "n = importlib.reload(n); print(n._module is None, n.IMPORT_ERROR)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(launch.__file__).parents[3], check=True).stdout
    assert out.startswith("True") and "DT_F64 = 3, the compiled module was built with 1" in out


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
