import pytest

from erasekit.errors import ErasekitError, UnknownNameError
from erasekit.registry import Registry


def test_register_get_and_suggestions():
    reg: Registry = Registry("widget")

    @reg.register("alpha", help="first")
    def alpha():
        return 1

    reg.add("beta", "math:sqrt", help="lazy")
    assert reg.get("alpha") is alpha and reg.names() == ["alpha", "beta"]
    import math

    assert reg.get("beta") is math.sqrt
    with pytest.raises(UnknownNameError, match="Did you mean: 'alpha'") as e:
        reg.get("alpah")
    assert isinstance(e.value, KeyError) and isinstance(e.value, ValueError)
    with pytest.raises(ErasekitError, match="already registered"):
        reg.add("alpha", lambda: 2)
