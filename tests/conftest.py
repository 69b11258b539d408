import os

import pytest
import torch

# Keep CI deterministic and within 2 cores.
torch.set_num_threads(min(2, os.cpu_count() or 1))

try:
    from hypothesis import settings

    settings.register_profile("ci", max_examples=15, deadline=None, derandomize=True)
    settings.register_profile("long", max_examples=300, deadline=None)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
except ImportError:  # pragma: no cover
    pass


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
