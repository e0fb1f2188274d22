"""lares_rl/core/allocator.py: glibc's thresholds set at the entry points change where memory comes
from, never a number; the call is idempotent, and a no-op (never an error) where it cannot apply."""

import ctypes
import platform
import subprocess

import pytest
import torch

from lares_rl.core import allocator
from lares_rl.core.allocator import OPT_OUT_VARIABLE, keep_freed_memory
from lares_rl.spt.config import SPTConfig
from lares_rl.spt.losses import spt_loss, total_loss
from tests.cli_process import CLI, ROOT, TINY_SPT, child_env
from tests.synthetic import random_histories, tiny_reasoner

GLIBC = platform.libc_ver()[0] == "glibc"


def tiny_training() -> list[torch.Tensor]:
    """Three SPT steps of a tiny reasoner on random histories: the losses and the final weights."""
    policy = tiny_reasoner(30, 8).train()
    optimizer = torch.optim.Adam(policy.parameters(), lr=1e-3)
    seqs, lengths = random_histories(64, 30, 8, seed=0)
    targets = torch.randint(1, 31, (64,), generator=torch.Generator().manual_seed(1))
    out = []
    for step in range(3):
        torch.manual_seed(step)
        loss = total_loss(spt_loss(policy, (seqs, lengths, targets), (seqs.flip(0), lengths.flip(0)), SPTConfig(mode="rows")), step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        out.append(loss.detach())
    return out + [p.detach().clone() for p in policy.parameters()]


def test_call_is_idempotent_and_training_numbers_are_the_same_after_it(monkeypatch):
    monkeypatch.delenv(OPT_OUT_VARIABLE, raising=False)
    before = tiny_training()
    assert keep_freed_memory() is GLIBC
    assert keep_freed_memory() is GLIBC  # again: the same values set, the same answer
    after = tiny_training()
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))


def test_opt_out_leaves_the_c_library_alone(monkeypatch):
    monkeypatch.setenv(OPT_OUT_VARIABLE, "system")
    monkeypatch.setattr(ctypes, "CDLL", lambda *_: pytest.fail("mallopt was reached despite LARES_RL_MALLOC=system"))
    assert keep_freed_memory() is False


@pytest.mark.parametrize(
    "setup",
    [
        lambda monkeypatch: monkeypatch.setattr(platform, "libc_ver", lambda: ("", "")),  # macOS, Windows, musl
        lambda monkeypatch: monkeypatch.setattr(ctypes, "CDLL", lambda *_: object()),  # no mallopt symbol
        lambda monkeypatch: monkeypatch.setattr(ctypes, "CDLL", lambda *_: (_ for _ in ()).throw(OSError("no libc"))),
    ],
)
def test_no_op_without_glibc_never_an_error(monkeypatch, setup):
    monkeypatch.delenv(OPT_OUT_VARIABLE, raising=False)
    setup(monkeypatch)
    assert allocator.keep_freed_memory() is False


@pytest.mark.slow
def test_spt_run_computes_the_same_bits_with_and_without_it(tmp_path, custom_data_args):
    """`lares-rl spt` in two fresh processes, the C library's defaults against the entry point's
    setting: the same checkpoint, weight for weight."""
    weights = {}
    for setting in ("system", "kept"):
        args = [*custom_data_args, *TINY_SPT, "spt.epochs=2", f"hydra.run.dir={setting}"]
        env = {key: value for key, value in child_env(PYTHONPATH=str(ROOT)).items() if key != OPT_OUT_VARIABLE}
        if setting == "system":
            env[OPT_OUT_VARIABLE] = "system"
        result = subprocess.run([*CLI, "spt", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        weights[setting] = torch.load(tmp_path / setting / "checkpoints" / "spt_best.pt", weights_only=False)["policy_state"]
    assert weights["system"].keys() == weights["kept"].keys()
    assert all(torch.equal(weights["system"][name], weights["kept"][name]) for name in weights["system"])
