"""The driver's pre-launch check of a run (batch split, BN layout, engine options) does not
import the models: torchvision and torch._dynamo cost ~1.5 s a driver."""

import subprocess
import sys


def test_check_layout_does_not_import_models():
    code = ("import sys; from ablate.config import compose; from ablate.launch import "
            "check_layout; check_layout(compose([]), 1); "
            "print(sorted(m for m in ('torchvision', 'torch._dynamo', 'ablate.models') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
