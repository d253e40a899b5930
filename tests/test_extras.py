"""Optional adapters: a missing extra is a one-line user error naming what to install."""
import json

import pytest

from nolabel.errors import NolabelError
from nolabel.extras import require


def test_require_imports_or_names_the_extra():
    assert require("json", "all") is json
    with pytest.raises(NolabelError, match=r"pip install 'nolabel\[clip\]'"):
        require("nolabel_no_such_module", "clip")
