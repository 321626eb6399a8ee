"""What an installed (non-editable) sj_qvm reads at run time ships in its wheel: every CUDA
source and header under ``sj_qvm/ops/<op>/`` (CuPy compiles them on first use, and
``ops/enums.py`` parses the shared enum header at import) matches a package-data glob of
pyproject.toml. Without it, ``import sj_qvm`` fails on an installed wheel, which the editable
install of the test run cannot show."""
from __future__ import annotations

import fnmatch
import re
import sys
import tomllib
from pathlib import Path

import sj_qvm
from sj_qvm.ops import enums

ROOT = Path(sj_qvm.__file__).parent


def _globs() -> list:
    data = tomllib.loads((ROOT.parent / "pyproject.toml").read_text())
    return data["tool"]["setuptools"]["package-data"]["sj_qvm"]


def _shipped(path: Path) -> bool:
    rel = path.relative_to(ROOT).as_posix()
    return any(fnmatch.fnmatchcase(rel, g) and rel.count("/") == g.count("/") for g in _globs())


def _includes(path: Path) -> set:
    """The quoted (project) includes of a C/CUDA source, as paths beside it."""
    found = re.findall(r'#include\s+"([^"]+)"', path.read_text())
    return {path.parent / name for name in found}


def test_the_enum_header_read_at_import_ships():
    assert _shipped(enums.HEADER), f"{enums.HEADER} is not in pyproject's package-data"


def test_every_cuda_source_and_what_it_includes_ships():
    sources = [p for p in (ROOT / "ops").glob("*/*") if p.suffix in (".cu", ".cuh", ".h")]
    assert any(p.suffix == ".cu" for p in sources)
    needed = set(sources)
    for p in sources:
        needed |= _includes(p)
    missing = sorted(str(p.relative_to(ROOT)) for p in needed if not _shipped(p))
    assert not missing, f"not in pyproject's package-data: {missing}"


def test_the_check_sees_a_missing_glob(monkeypatch):
    """The converse: without the header glob the enum header would not ship."""
    monkeypatch.setattr(sys.modules[__name__], "_globs", lambda: ["ops/*/*.cu", "ops/*/*.cuh"])
    assert not _shipped(enums.HEADER)
