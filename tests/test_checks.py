"""The argument checks every constructor uses: accepted values pass through, bad ones are named."""
import pytest
import torch

from sj_qvm import checks


@pytest.mark.parametrize("fn,good,allowed", [(checks.check_rounding, "round", checks.ROUNDINGS),
                                             (checks.check_current, "expected", checks.CURRENTS),
                                             (checks.check_step_mode, "m", checks.STEP_MODES)])
def test_choices_accept_and_name_the_allowed_values(fn, good, allowed):
    assert fn(good) == good
    with pytest.raises(ValueError) as e:
        fn("nope", name="my_arg")
    assert "my_arg" in str(e.value) and all(a in str(e.value) for a in allowed)
    with pytest.raises(ValueError):
        fn(None)


def test_int_bounds_and_types():
    assert checks.check_levels(1) == 1
    for bad, err in [(0, ValueError), (-3, ValueError), (True, TypeError), (2.0, TypeError), ("4", TypeError)]:
        with pytest.raises(err, match="levels"):
            checks.check_levels(bad)
    assert checks.check_int(5, "epochs", minimum=0, maximum=5) == 5
    with pytest.raises(ValueError, match=r"epochs must be an int >= 0 and <= 5, got 6"):
        checks.check_int(6, "epochs", minimum=0, maximum=5)


def test_positive_and_fraction():
    assert checks.check_positive(0.5, "lr") == 0.5
    assert checks.check_positive(0, "wd", allow_zero=True) == 0.0
    for bad in [0, -1.0, float("nan"), float("inf")]:
        with pytest.raises(ValueError, match="lr"):
            checks.check_positive(bad, "lr")
    with pytest.raises(TypeError, match="lr"):
        checks.check_positive(True, "lr")
    assert checks.check_fraction(100, "percentile", 0, 100) == 100.0
    with pytest.raises(ValueError, match="percentile"):
        checks.check_fraction(0, "percentile", 0, 100)
    with pytest.raises(TypeError, match="flag"):
        checks.check_bool(1, "flag")


def test_positive_finite_tensor():
    t = checks.check_positive_finite([1.0, 2.0], "threshold")
    assert t.shape == (2,) and t.dtype == torch.get_default_dtype()
    for bad in [[1.0, 0.0], [float("inf")], [[1.0]], []]:
        with pytest.raises(ValueError, match="threshold"):
            checks.check_positive_finite(bad, "threshold")
