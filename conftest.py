"""Loaded by pytest before anything imports torch: put the run under the pinned CPU numerics.

The settings live in sdlearn/numerics.env (see sdlearn.numerics); the notebook kernels that nbval
starts inherit them. A variable set in the environment beforehand wins.
"""

import importlib.util
from pathlib import Path

# Load sdlearn/numerics.py by path: it imports nothing heavy, and this works before installation.
_spec = importlib.util.spec_from_file_location("_sdlearn_numerics", Path(__file__).parent / "sdlearn" / "numerics.py")
_numerics = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_numerics)
_numerics.apply()
