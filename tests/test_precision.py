"""precision=auto|bf16|fp32 (issue 34 item 3): which precision a run picks and says, the bf16 catalog
loss against an fp64 reference, the SPT step under bf16, and fp32 left exactly as it was.

The suite runs fp32 whatever the machine: in-process tests never enter ``use_numerics`` except
here, and tests/conftest.py sets ``LARES_RL_PRECISION=fp32``, which the CLI's children inherit."""

import copy

import pytest
import torch
import torch.nn.functional as F

from lares_rl.catalog.fused_ce import catalog_cross_entropy
from lares_rl.commands.schemas import compose_config
from lares_rl.commands.session import training_numerics
from lares_rl.core.errors import LaresError
from lares_rl.core.precision import FP32_EAGER, Numerics, bf16_matrix_units, current_numerics, resolve_numerics, use_numerics
from lares_rl.eval.evaluation import EvalConfig, evaluate_policy
from lares_rl.policies.reasoner import LaresReasoner
from lares_rl.spt.config import SPTConfig
from lares_rl.spt.distributed import SPTStep
from lares_rl.spt.losses import info_nce, spt_loss
from tests.synthetic import random_histories

CPU = torch.device("cpu")


# ----------------------------------------------------------------------------- the choice and its line


def test_auto_is_bf16_only_with_bf16_matrix_units_and_says_why(monkeypatch):
    monkeypatch.setattr("lares_rl.core.precision.BF16_KEEPS_ACCURACY", True)
    numerics, line = resolve_numerics("auto", False, CPU, "this CPU has amx_bf16")
    assert numerics == Numerics("bf16", False) and "amx_bf16" in line and line.startswith("bf16")
    numerics, line = resolve_numerics("auto", False, CPU, None)
    assert numerics == FP32_EAGER and "no bf16 matrix units" in line and line.startswith("fp32")
    monkeypatch.setattr("lares_rl.core.precision.BF16_KEEPS_ACCURACY", False)
    numerics, line = resolve_numerics("auto", True, CPU, "this CPU has amx_bf16")
    assert numerics == Numerics("fp32", True) and "lost accuracy" in line and "compile=on" in line


def test_a_set_precision_wins_and_bf16_without_units_warns_of_slowness():
    assert resolve_numerics("fp32", False, CPU, "this CPU has amx_bf16")[0] == FP32_EAGER
    numerics, line = resolve_numerics("bf16", False, CPU, None)
    assert numerics.bf16 and "slower" in line


@pytest.mark.parametrize(("precision", "compile", "key"), [("fp16", False, "precision='fp16'"), ("bf16", "yes", "compile='yes'")])
def test_bad_values_name_the_key(precision, compile, key):
    with pytest.raises(LaresError, match=key):
        resolve_numerics(precision, compile, CPU, None)


def test_cpu_units_come_from_the_cpuinfo_flags(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_tile amx_bf16\n")
    assert bf16_matrix_units(CPU, cpuinfo) == "this CPU has amx_bf16 and avx512_bf16"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 fma\n")
    assert bf16_matrix_units(CPU, cpuinfo) is None
    assert bf16_matrix_units(CPU, tmp_path / "absent") is None


def test_the_config_keys_reach_the_numerics(monkeypatch):
    assert compose_config([]).precision == "fp32"  # tests/conftest.py pins the suite through LARES_RL_PRECISION
    monkeypatch.delenv("LARES_RL_PRECISION")
    assert (compose_config([]).precision, compose_config([]).compile) == ("auto", False)
    assert training_numerics(compose_config(["precision=bf16", "compile=true"]), CPU)[0] == Numerics("bf16", True)
    assert training_numerics(compose_config(["precision=fp32"]), CPU)[0] == FP32_EAGER


def test_numerics_are_fp32_outside_a_command_and_restored_after_one():
    assert current_numerics() == FP32_EAGER
    with use_numerics(Numerics("bf16")):
        assert current_numerics().bf16
    assert current_numerics() == FP32_EAGER


# ----------------------------------------------------------------------------- the bf16 catalog loss


def _catalog(n: int = 96, d: int = 32, items: int = 700, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    states = (torch.randn(n, d, generator=g) * 0.6).requires_grad_()
    table = (torch.randn(items + 1, d, generator=g) * 0.6).requires_grad_()
    targets = torch.randint(1, items + 1, (n,), generator=g)
    return states, table, targets


def _loss_and_grads(loss_fn, states, table) -> tuple[torch.Tensor, ...]:
    states.grad = table.grad = None
    loss = loss_fn()
    loss.backward()
    return loss.detach(), states.grad.clone(), table.grad.clone()


def _full_reference(states, table, targets) -> torch.Tensor:
    logits = states.double() @ table.double().T
    logits[:, 0] = float("-inf")
    return F.cross_entropy(logits, targets)


def test_bf16_catalog_loss_keeps_fp32_sums_and_stays_near_the_fp64_loss():
    """bf16 products round scores to 8 bits (relative 2^-9), so gradients agree to about 1e-2 of
    their scale; the loss (fp32 log-sum-exp) to about 1e-4. Loss and both gradients come back fp32."""
    states, table, targets = _catalog()
    reference = _loss_and_grads(lambda: _full_reference(states, table, targets), states, table)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fused = _loss_and_grads(lambda: catalog_cross_entropy(states, table, targets, chunk=128), states, table)
    assert [t.dtype for t in fused] == [torch.float32] * 3
    for got, want, tolerance in zip(fused, reference, (1e-4, 2e-2, 2e-2)):
        assert float((got.double() - want).abs().max() / want.abs().max()) < tolerance


def test_bf16_catalog_loss_takes_bf16_states_with_an_fp32_table():
    """Under autocast the layers hand over bf16 states while the item table is an fp32 parameter."""
    states, table, targets = _catalog()
    half = states.detach().bfloat16().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = catalog_cross_entropy(half, table, targets)
    loss.backward()
    assert loss.dtype == torch.float32 and half.grad.dtype == torch.bfloat16 and table.grad.dtype == torch.float32
    assert abs(loss.item() - _full_reference(states, table, targets).item()) < 1e-2


def test_fp32_catalog_loss_is_untouched_outside_autocast():
    states, table, targets = _catalog()
    plain = _loss_and_grads(lambda: catalog_cross_entropy(states, table, targets), states, table)
    with torch.autocast("cpu", enabled=False):
        again = _loss_and_grads(lambda: catalog_cross_entropy(states, table, targets), states, table)
    assert all(torch.equal(a, b) for a, b in zip(plain, again))
    assert float((plain[0] - _full_reference(states, table, targets).detach()).abs()) < 1e-5


def test_info_nce_runs_fp32_under_autocast():
    x, y = torch.randn(16, 8), torch.randn(16, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = info_nce(x, y, "cosine", 0.07)
    assert inside.dtype == torch.float32 and torch.equal(inside, info_nce(x, y, "cosine", 0.07))


# ----------------------------------------------------------------------------- the SPT step


def _model() -> LaresReasoner:
    torch.manual_seed(0)
    return LaresReasoner(50, 8, d_model=16, inner_size=32, n_heads=2).train()


def _batch() -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, torch.Tensor]]:
    seq, lengths = random_histories(12, 50, 8, seed=1)
    pos_seq, pos_lengths = random_histories(12, 50, 8, seed=2)
    return (seq, lengths, torch.randint(1, 51, (12,), generator=torch.Generator().manual_seed(3))), (pos_seq, pos_lengths)


@pytest.mark.parametrize("catalog_loss", ["fused", "full"])
def test_the_fp32_step_is_spt_loss_unchanged(catalog_loss):
    cfg = SPTConfig(catalog_loss=catalog_loss)
    batch, positive = _batch()
    model = _model()
    twin = copy.deepcopy(model)
    torch.manual_seed(5)
    stepped = SPTStep(model, cfg)(batch, positive)
    torch.manual_seed(5)
    direct = spt_loss(twin, batch, positive, cfg)
    assert stepped.keys() == direct.keys() and all(torch.equal(stepped[k], direct[k]) for k in direct)


@pytest.mark.parametrize("catalog_loss", ["fused", "full"])
def test_the_bf16_step_trains_fp32_weights_near_the_fp32_loss(catalog_loss):
    cfg = SPTConfig(catalog_loss=catalog_loss)
    batch, positive = _batch()
    losses, models = {}, {}
    for precision in ("fp32", "bf16"):
        models[precision] = _model()
        with use_numerics(Numerics(precision)):
            step = SPTStep(models[precision], cfg)
        optimizer = torch.optim.Adam(models[precision].parameters(), lr=1e-3)
        torch.manual_seed(5)
        terms = step(batch, positive)
        losses[precision] = terms
        sum(v for k, v in terms.items() if k.startswith("loss_")).backward()
        optimizer.step()
    assert all(losses["bf16"][k].dtype == torch.float32 for k in losses["bf16"] if k.startswith("loss_"))
    for key in ("loss_rec", "loss_tla", "loss_sla"):
        assert abs(losses["bf16"][key].item() - losses["fp32"][key].item()) < 0.02 * abs(losses["fp32"][key].item()) + 1e-3, key
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in models["bf16"].parameters())


def test_evaluation_scores_in_fp32_under_bf16_numerics():
    """Evaluation never reads the run's numerics: its metrics inside a bf16 run are the fp32 ones."""

    class Users:
        def eval_inputs(self, split, max_len):
            seq, lengths = random_histories(40, 50, 8, seed=4)
            return seq, lengths, torch.randint(1, 51, (40,), generator=torch.Generator().manual_seed(6))

    model = _model().eval()
    plain = evaluate_policy(model, Users(), "valid", 8, EvalConfig(split="valid"), CPU)
    with use_numerics(Numerics("bf16")):
        inside = evaluate_policy(model, Users(), "valid", 8, EvalConfig(split="valid"), CPU)
    assert plain == inside
