"""Shared fixtures: paths to the real data in ../shared/data and tiny models."""
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.environ.get("NANOCAP_SHARED_DATA",
                             os.path.join(os.path.dirname(ROOT), "shared", "data"))


@pytest.fixture(scope="session")
def shared_data():
    """Path of ../shared/data (real Flickr8k/COCO/Karpathy/metrics files)."""
    if not os.path.isdir(SHARED_DATA):
        pytest.skip("shared data not found at %s" % SHARED_DATA)
    return SHARED_DATA
