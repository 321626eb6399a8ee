"""sj_qvm.export.to_nir refuses: NIR 1.0.x cannot state a QVM neuron (docs/nir.md)."""
import pytest

from nets import build
from sj_qvm import convert
from sj_qvm.export import to_nir
from sj_qvm.graph import ConversionError


def test_nir_is_refused_in_one_line_naming_what_it_cannot_state():
    with pytest.raises(ConversionError) as e:
        to_nir(convert(build("mlp", 2, "round")[0]))
    msg = str(e.value)
    assert "\n" not in msg
    assert all(w in msg for w in ("initial membrane voltage", "v > theta", "v >= theta", "reset"))
