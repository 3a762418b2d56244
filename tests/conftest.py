"""Shared fixtures: one small generated sample per test session."""
import os
from pathlib import Path

import pytest

import common
import sample_generator as sg


@pytest.fixture(scope="session")
def small_sample_dir(tmp_path_factory) -> Path:
    """A 300-user x 1,500-product generated sample in Kaggle layout (seed 1)."""
    return sg.generate(tmp_path_factory.mktemp("gen") / "sample", n_users=300, n_products=1500,
                       seed=1, progress=False)


def real_data_dir() -> Path:
    """The real Kaggle-format folder named by $INSTACART_DATA_DIR, else skip the test."""
    d = os.environ.get(common.DATA_ENV)
    if not d or not Path(d).is_dir():
        pytest.skip(f"${common.DATA_ENV} is not set to a directory of real Kaggle CSVs")
    return Path(d)
