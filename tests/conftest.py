import os

import pytest
import torch

# The test machines have 2 cores and pytest runs 2 workers: one thread each avoids the
# oversubscription that makes small torch ops 10-50x slower (see FACTS.md).
torch.set_num_threads(int(os.environ.get("NTKPRIOR_TEST_THREADS", "1")))


@pytest.fixture
def rng():
    import numpy as np
    return np.random.default_rng(0)
