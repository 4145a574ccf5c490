import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

from ipt_data.fixtures import TINY_SYNTHESIZER  # noqa: E402


@pytest.fixture(scope="session")
def model_path() -> str:
    return TINY_SYNTHESIZER


@pytest.fixture(scope="session")
def encoder(model_path):
    from ipt_data.budget import PromptEncoder

    return PromptEncoder(model_path)
