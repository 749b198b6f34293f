"""The one registration helper (atkit.core.registry.Registry)."""
import pytest

from atkit.core.registry import REQUIRED, Registry
from atkit.core.utils import ConfigError


def test_register_get_and_unknown_name_error():
    reg = Registry("widget")

    @reg.register("alpha")
    def alpha(num_classes: int = 10, *, width: int = 32, **kw):
        return ("alpha", num_classes, width)

    @reg.register()
    class Beta:
        name = "beta"

        def __init__(self, threat, lr=0.1):
            self.lr = lr

    assert reg.names() == ["alpha", "beta"] and "alpha" in reg and reg["beta"] is Beta
    assert reg.get("alpha")(3) == ("alpha", 3, 32)
    with pytest.raises(ConfigError, match=r"unknown widget 'alpah'\. Did you mean 'alpha'\? Accepted: alpha, beta"):
        reg.get("alpah")
    assert reg.options("alpha") == {"num_classes": 10, "width": 32}
    assert reg.options("alpha", skip=["num_classes"]) == {"width": 32}
    assert reg.options("beta") == {"threat": REQUIRED, "lr": 0.1}


def test_same_name_twice_is_an_error_unless_same_entry():
    reg = Registry("widget")

    def f():
        pass

    reg.add("f", f)
    reg.add("f", f)  # re-registering the same object (module reload) is harmless
    with pytest.raises(ValueError, match="registered twice"):
        reg.add("f", lambda: None)
    with pytest.raises(ValueError, match="non-empty"):
        reg.add("", f)
