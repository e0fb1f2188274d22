"""compile=true (issue 34 item 4): the SPT step runs the reasoner blocks compiled by TorchInductor,
and only inside the step. Compiling takes tens of seconds on a shared CPU, so this is marked slow
(run with ``-m slow``); nothing else in the suite compiles, because nothing else enters ``use_numerics``."""

import copy

import pytest
import torch

from lares_rl.core.precision import Numerics, use_numerics
from lares_rl.policies.reasoner import LaresReasoner
from lares_rl.spt.config import SPTConfig
from lares_rl.spt.distributed import SPTStep
from tests.synthetic import random_histories


@pytest.mark.slow
def test_the_compiled_step_gives_the_eager_loss_and_leaves_the_policy_plain():
    torch.manual_seed(0)
    model = LaresReasoner(30, 6, d_model=16, inner_size=32, n_heads=2, dropout=0.0, step_sampler="constant", mean_recurrence=2).train()
    twin = copy.deepcopy(model)
    seq, lengths = random_histories(8, 30, 6, seed=1)
    batch = (seq, lengths, torch.randint(1, 31, (8,), generator=torch.Generator().manual_seed(2)))
    positive = random_histories(8, 30, 6, seed=3)
    cfg = SPTConfig(catalog_loss="fused")
    with use_numerics(Numerics("fp32", compile=True)):
        compiled = SPTStep(model, cfg)
    eager = SPTStep(twin, cfg)
    blocks = (model.pre_block, model.core_block)
    for seed in range(2):  # the second call reuses the compiled graphs
        torch.manual_seed(seed)
        got = compiled(batch, positive)
        torch.manual_seed(seed)
        want = eager(batch, positive)
        for key in ("loss_rec", "loss_tla", "loss_sla"):
            assert torch.allclose(got[key], want[key], rtol=1e-5, atol=1e-6), key
        got["loss_rec"].backward()
        want["loss_rec"].backward()
    assert all(
        torch.allclose(a.grad, b.grad, rtol=1e-4, atol=1e-6) for a, b in zip(model.parameters(), twin.parameters()) if a.grad is not None
    )
    assert (model.pre_block, model.core_block) == blocks  # the policy's own modules again, outside the step
    assert set(model.state_dict()) == set(twin.state_dict())
