import math
import os
import re
import signal

import pytest
import torch
import torch.nn.functional as F

from lares_rl.core.checkpoint import load_checkpoint
from lares_rl.core.errors import LaresError
from lares_rl.core.resume import TrainingInterrupted, load_training_state, save_training_state, weights_digest
from lares_rl.data import SequenceData
from lares_rl.eval.evaluation import EvalConfig
from lares_rl.policies.reasoner import OPTIONS_ADDED_LATER, LaresReasoner
from lares_rl.spt import train as spt
from lares_rl.spt.batches import SameTargetIndex, epoch_order
from lares_rl.spt.config import SPTConfig
from lares_rl.spt.losses import info_nce, recommendation_loss, spt_loss, symmetric_info_nce
from lares_rl.spt.train import train_spt


def test_info_nce_matches_direct_formula():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    direct = 0.0
    for i in range(5):
        logits = [float(x[i] @ y[j]) / 0.5 for j in range(5)]
        direct += -(logits[i] - math.log(sum(math.exp(v) for v in logits)))
    assert math.isclose(info_nce(x, y, "dot", 0.5).item(), direct / 5, rel_tol=1e-5)
    xn, yn = F.normalize(x, dim=-1), F.normalize(y, dim=-1)
    assert torch.isclose(info_nce(x, y, "cosine", 0.07), info_nce(xn, yn, "dot", 0.07))


def test_same_target_index_draws_other_rows_with_same_target():
    targets = torch.tensor([3, 1, 3, 2, 3, 1, 7])
    index = SameTargetIndex(targets)
    g = torch.Generator().manual_seed(0)
    seen = {i: set() for i in range(len(targets))}
    for _ in range(200):
        rows = torch.arange(len(targets))
        for row, pos in zip(rows.tolist(), index.sample(rows, g).tolist()):
            assert targets[pos] == targets[row]
            seen[row].add(pos)
    assert seen[0] == {2, 4} and seen[1] == {5} and seen[3] == {3} and seen[6] == {6}


def _tiny_model(**kw):
    torch.manual_seed(0)
    return LaresReasoner(20, 6, d_model=16, inner_size=32, **kw)


@pytest.mark.parametrize("shared_anchor", [True, False])
def test_spt_terms_match_direct_computation(monkeypatch, shared_anchor):
    model = _tiny_model(dropout=0.0, t0_init="zero", step_sampler="constant", mean_recurrence=3)
    seq = torch.tensor([[1, 2, 3, 0, 0, 0], [4, 5, 0, 0, 0, 0], [6, 7, 8, 9, 0, 0]])
    lengths = torch.tensor([3, 2, 4])
    targets = torch.tensor([4, 6, 10])
    pos_seq = torch.tensor([[2, 3, 0, 0, 0, 0], [5, 0, 0, 0, 0, 0], [7, 8, 9, 0, 0, 0]])
    pos_len = torch.tensor([2, 1, 3])
    monkeypatch.setattr(torch, "randint", lambda low, high, size, **kw: torch.tensor(2))  # SLA step j = 2
    cfg = SPTConfig(alpha=0.1, gamma=0.5, shared_anchor=shared_anchor)
    terms = spt_loss(model, (seq, lengths, targets), (pos_seq, pos_len), cfg)
    steps = model.encode(seq, lengths, k=3)
    h_a, h_p, h_j = steps[:, -1], model.encode(pos_seq, pos_len, k=3)[:, -1], steps[:, 1]
    rec = F.cross_entropy((h_a @ model.item_embedding.weight.T)[:, 1:], targets - 1)
    tla = (info_nce(h_a, h_p, "dot", 1.0) + info_nce(h_p, h_a, "dot", 1.0)) / 2
    sla = (info_nce(h_a, h_j, "dot", 1.0) + info_nce(h_j, h_a, "dot", 1.0)) / 2
    assert torch.isclose(terms["loss_rec"], rec, atol=1e-6)
    assert torch.isclose(terms["loss_tla"], 0.1 * tla, atol=1e-6)
    assert torch.isclose(terms["loss_sla"], 0.5 * sla, atol=1e-6)
    assert terms["k"].item() == 3 and terms["k_prime"].item() == 3


def _watch_encode_calls(monkeypatch, model, observe=lambda lengths: int(lengths.max())) -> list:
    """``observe(lengths)`` at every ``encode`` call on ``model`` (one entry per pass; default: its width)."""
    seen, original = [], model.encode

    def watched(seq, lengths, *args, **kwargs):
        seen.append(observe(lengths))
        return original(seq, lengths, *args, **kwargs)

    monkeypatch.setattr(model, "encode", watched)
    return seen


@pytest.mark.parametrize("shared_anchor, passes", [(True, 2), (False, 3)])
def test_shared_anchor_saves_a_pass_and_the_positive_pass_runs_at_its_own_width(monkeypatch, shared_anchor, passes):
    model = _tiny_model()
    widths = _watch_encode_calls(monkeypatch, model)
    batch = (torch.tensor([[1, 2, 3, 4, 5, 0]] * 2), torch.tensor([5, 5]), torch.tensor([3, 4]))
    positive = (torch.tensor([[1, 2, 0, 0, 0, 0]] * 2), torch.tensor([2, 1]))
    terms = spt_loss(model, batch, positive, SPTConfig(shared_anchor=shared_anchor))
    assert widths == [5] * (passes - 1) + [2]
    if shared_anchor:
        assert terms["k"] == terms["k_prime"]


def test_positive_without_gradient_keeps_the_loss_and_stops_only_the_positive_pass_gradient(monkeypatch):
    """``positive_gradient=false``: the same loss values, the positive pass runs without autograd,
    and the gradient is exactly the one with h_p detached (the anchor keeps both TLA directions)."""
    model = _tiny_model(dropout=0.0, t0_init="zero", step_sampler="constant", mean_recurrence=3)
    batch = (
        torch.tensor([[1, 2, 3, 4, 0, 0], [5, 6, 7, 0, 0, 0], [8, 9, 10, 11, 12, 0]]),
        torch.tensor([4, 3, 5]),
        torch.tensor([5, 8, 13]),
    )
    positive = (torch.tensor([[2, 3, 4, 0, 0, 0], [6, 7, 0, 0, 0, 0], [9, 10, 11, 12, 0, 0]]), torch.tensor([3, 2, 4]))
    original = model.encode
    grad_enabled = _watch_encode_calls(monkeypatch, model, observe=lambda _: torch.is_grad_enabled())
    full = spt_loss(model, batch, positive, SPTConfig(alpha=0.1, gamma=0.0))
    stopped = spt_loss(model, batch, positive, SPTConfig(alpha=0.1, gamma=0.0, positive_gradient=False))
    assert grad_enabled == [True, True, True, False]
    assert torch.isclose(full["loss_tla"], stopped["loss_tla"]) and torch.isclose(full["loss_rec"], stopped["loss_rec"])

    def grads(loss):
        return [
            p.clone()
            for p in torch.autograd.grad(loss, list(model.parameters()), allow_unused=True, materialize_grads=True, retain_graph=True)
        ]

    anchor = original(batch[0], batch[1], k=3)[:, -1]
    target = original(positive[0], positive[1], k=3)[:, -1].detach()
    rec = F.cross_entropy((anchor @ model.item_embedding.weight.T)[:, 1:], batch[2] - 1)
    detached = rec + 0.1 * symmetric_info_nce(anchor, target, "dot", 1.0)
    for got, want in zip(grads(stopped["loss_rec"] + stopped["loss_tla"]), grads(detached)):
        assert torch.allclose(got, want, atol=1e-6)
    reference = zip(grads(full["loss_rec"] + full["loss_tla"]), grads(detached))
    assert any(not torch.allclose(got, want, atol=1e-6) for got, want in reference)  # the reference's gradient also flows through h_p


def test_positive_gradient_must_be_a_boolean():
    with pytest.raises(LaresError, match=r"spt.positive_gradient"):
        SPTConfig(positive_gradient="no").validate()


def test_shared_anchor_in_dense_mode_is_the_window_last_target_state():
    """Dense windows score every position in one pass; the anchor must be the state at each
    window's last target (lengths - 1), exactly what a separate last-position pass returns."""
    model = _tiny_model(dropout=0.0, t0_init="zero", step_sampler="constant", mean_recurrence=3)
    sequences = [[1, 2, 3, 4, 5, 6, 7, 8, 9], [3, 5, 7, 9, 11, 13], [2, 4, 6, 8, 10, 12, 14, 16]]
    seqs, lengths, targets = SequenceData.from_sequences(sequences, num_items=20).train_windows(6, 3)
    loss, anchor_steps = recommendation_loss(model, seqs, lengths, targets, k=3)
    assert torch.allclose(anchor_steps, model.encode(seqs, lengths, k=3), atol=1e-6)
    shared = spt_loss(model, (seqs, lengths, targets), (seqs, lengths), SPTConfig(shared_anchor=True, gamma=0.0))
    separate = spt_loss(model, (seqs, lengths, targets), (seqs, lengths), SPTConfig(shared_anchor=False, gamma=0.0))
    for name in ("loss_rec", "loss_tla"):
        assert torch.isclose(shared[name], separate[name], atol=1e-6)
    assert torch.isclose(shared["loss_rec"], loss)


def test_ablations_drop_terms_and_sasrec_trains_on_rec_only():
    batch = (torch.tensor([[1, 2, 0, 0, 0, 0]] * 2), torch.tensor([2, 2]), torch.tensor([3, 4]))
    positive = batch[:2]
    assert set(k for k in spt_loss(_tiny_model(), batch, positive, SPTConfig(alpha=0.0)) if k.startswith("loss_")) <= {
        "loss_rec",
        "loss_sla",
    }
    no_sla = spt_loss(_tiny_model(), batch, positive, SPTConfig(gamma=0.0))
    assert "loss_sla" not in no_sla and "loss_tla" in no_sla
    sasrec = _tiny_model(n_core_layers=0, step_sampler="none", t0_init="zero")
    assert [k for k in spt_loss(sasrec, batch, positive, SPTConfig()) if k.startswith("loss_")] == ["loss_rec"]


@pytest.mark.parametrize("core_layers", [0, 2])
@pytest.mark.parametrize("max_len,stride", [(6, 1), (10, 10)])
def test_dense_windows_give_the_same_loss_as_rows(core_layers, max_len, stride):
    """Causal masking makes one dense pass equal to scoring every prefix row separately, whenever
    the window gives each target the same context as its row (stride 1, or one window per user)."""
    sequences = [[1, 2, 3, 4, 5, 6, 7, 8, 9], [3, 5, 7, 9, 11, 13], [2, 4, 6, 8, 10, 12, 14, 16, 18, 19, 20]]
    data = SequenceData.from_sequences(sequences, num_items=20)
    model = LaresReasoner(
        20,
        max_len,
        d_model=16,
        inner_size=32,
        n_core_layers=core_layers,
        t0_init="zero",
        step_sampler="constant" if core_layers else "none",
    ).eval()
    rows = data.train_rows(max_len)
    windows = data.train_windows(max_len, stride)
    row_loss, _ = recommendation_loss(model, *rows)
    dense_loss, _ = recommendation_loss(model, *windows)
    assert torch.isclose(row_loss, dense_loss, atol=1e-5)


def test_bucketed_epoch_order_covers_every_row_once_and_tightens_batch_widths():
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 21, (1000,), generator=g)
    plain = epoch_order(lengths, 32, False, torch.Generator().manual_seed(1))
    assert torch.equal(plain, torch.randperm(1000, generator=torch.Generator().manual_seed(1)))  # the reference order
    bucketed = epoch_order(lengths, 32, True, torch.Generator().manual_seed(1), pool_batches=8)
    assert torch.equal(bucketed.sort().values, torch.arange(1000))
    width = lambda order: sum(int(lengths[b].max()) for b in order.split(32))  # noqa: E731
    assert width(bucketed) < 0.75 * width(plain)
    again = epoch_order(lengths, 32, True, torch.Generator().manual_seed(1), pool_batches=8)
    assert torch.equal(bucketed, again)


def _tiny_data() -> SequenceData:
    g = torch.Generator().manual_seed(0)
    return SequenceData.from_sequences(
        [torch.randint(1, 21, (int(n),), generator=g).tolist() for n in torch.randint(5, 9, (20,), generator=g)], num_items=20
    )


def _train(run_dir, cfg: SPTConfig, resume: bool, **changes) -> dict:
    kwargs = (
        dict(
            policy=_tiny_model(),
            policy_config={"d_model": 16},
            data=_tiny_data(),
            max_len=6,
            cfg=cfg,
            eval_cfg=EvalConfig(),
            run_dir=run_dir,
            device=torch.device("cpu"),
            seed=0,
            config={"dataset": {"name": "tiny"}},
            progress=False,
            resume=resume,
        )
        | changes
    )
    return train_spt(**kwargs)


def test_resume_refuses_other_settings_except_more_epochs(tmp_path, capsys):
    """Half-applied settings are worse than an error: Adam's saved lr and the saved patience would
    win, another batch size would re-cut the saved epoch order. Only spt.epochs may grow."""
    base = SPTConfig(epochs=1, batch_size=16, patience=5)
    _train(tmp_path, base, resume=False)
    for cfg, changes, named in (
        (SPTConfig(epochs=1, batch_size=8, patience=5), {}, "spt.batch_size=16 (not 8)"),
        (SPTConfig(epochs=1, batch_size=16, patience=5, lr=0.01), {}, f"spt.lr={base.lr} (not 0.01)"),
        (base, {"seed": 1}, "seed=0 (not 1)"),
        (base, {"policy_config": {"d_model": 32}}, "policy"),
    ):
        with pytest.raises(LaresError, match=f"pass the saved ones: {re.escape(named)} \\(only spt.epochs"):
            _train(tmp_path, cfg, resume=True, **changes)
    assert _train(tmp_path, SPTConfig(epochs=2, batch_size=16, patience=5), resume=True)["epochs_run"] == 2
    state_path = tmp_path / "checkpoints" / "spt_last.pt"
    state = load_training_state(state_path)
    del state["settings"]  # saved before settings were recorded
    save_training_state(state_path, state)
    capsys.readouterr()
    _train(tmp_path, SPTConfig(epochs=3, batch_size=16, patience=5), resume=True)
    assert "saved without its settings" in capsys.readouterr().out


def test_a_run_saved_before_shared_anchor_existed_resumes_only_with_the_separate_anchor(tmp_path):
    """Such a run trained with three passes; resuming it with the shared anchor would mix the two."""
    _train(tmp_path, SPTConfig(epochs=1, batch_size=16, shared_anchor=False), resume=False)
    state_path = tmp_path / "checkpoints" / "spt_last.pt"
    state = load_training_state(state_path)
    del state["settings"]["spt"]["shared_anchor"]
    save_training_state(state_path, state)
    with pytest.raises(LaresError, match=r"spt.shared_anchor=False \(not True\)"):
        _train(tmp_path, SPTConfig(epochs=2, batch_size=16), resume=True)
    assert _train(tmp_path, SPTConfig(epochs=2, batch_size=16, shared_anchor=False), resume=True)["epochs_run"] == 2


@pytest.mark.parametrize("mode, bucket", [("rows", False), ("dense", True)])
def test_ctrl_c_mid_epoch_then_resume_is_bit_identical(tmp_path, monkeypatch, mode, bucket):
    """The SIGKILL test through the CLI can only kill between end-of-epoch saves; this one stops
    inside an epoch, where the saved epoch order and batch index must carry the run on exactly."""
    cfg = SPTConfig(epochs=2, batch_size=4, patience=5, mode=mode, bucket_by_length=bucket)
    full = _train(tmp_path / "full", cfg, resume=False)
    _interrupt_at_step(monkeypatch, 3)
    with pytest.raises(TrainingInterrupted, match="Resume with: lares-rl run resume=cut spt.epochs=2$"):  # the caller's hint, as given
        _train(tmp_path / "cut", cfg, resume=False, resume_command="lares-rl run resume=cut spt.epochs=2")
    progress = load_training_state(tmp_path / "cut" / "checkpoints" / "spt_last.pt")["progress"]
    assert (progress["epoch"], progress["next_batch"]) == (0, 3)
    monkeypatch.undo()
    resumed = _train(tmp_path / "cut", cfg, resume=True)
    assert resumed["valid"] == full["valid"] and resumed["best_epoch"] == full["best_epoch"]
    assert weights_digest(load_checkpoint(tmp_path / "cut" / "checkpoints" / "spt_best.pt")["policy_state"]) == weights_digest(
        load_checkpoint(tmp_path / "full" / "checkpoints" / "spt_best.pt")["policy_state"]
    )


def _interrupt_at_step(monkeypatch, at: int) -> None:
    """Ctrl-C while the ``at``-th gradient step is computed (the run stops after that step)."""
    original, calls = spt.total_loss, []

    def interrupting(terms, step):
        calls.append(step)
        if len(calls) == at:
            os.kill(os.getpid(), signal.SIGINT)
        return original(terms, step)

    monkeypatch.setattr(spt, "total_loss", interrupting)


def before_run_state_core(state: dict) -> dict:
    """A training state in the layout lares_rl wrote before the run-state core (core/run_state.py):
    no ``lares_rl_version``, and the SPT progress as its dict, ``epoch_partial_seconds`` only after a Ctrl-C."""
    old = {key: value for key, value in state.items() if key != "lares_rl_version"}
    settings = state["settings"]  # nor the policy options added since (they ran at their defaults)
    old["settings"] = {**settings, "policy_config": {k: v for k, v in settings["policy_config"].items() if k not in OPTIONS_ADDED_LATER}}
    progress = {key: state["progress"][key] for key in ("epoch", "next_batch", "perm", "seen_rows", "step", "epoch_seconds", "finished")}
    if state["progress"]["epoch_partial_seconds"]:
        progress["epoch_partial_seconds"] = state["progress"]["epoch_partial_seconds"]
    return {**old, "progress": progress}


def test_a_state_saved_before_the_run_state_core_resumes_bit_identically(tmp_path, monkeypatch):
    cfg = SPTConfig(epochs=2, batch_size=4, patience=5)
    full = _train(tmp_path / "full", cfg, resume=False)
    _interrupt_at_step(monkeypatch, 3)
    with pytest.raises(TrainingInterrupted):
        _train(tmp_path / "cut", cfg, resume=False)
    monkeypatch.undo()
    state_path = tmp_path / "cut" / "checkpoints" / "spt_last.pt"
    state = load_training_state(state_path)
    assert state["lares_rl_version"] and state["progress"]["epoch_partial_seconds"] > 0  # the progress is saved as a plain dict
    save_training_state(state_path, before_run_state_core(state))
    resumed = _train(tmp_path / "cut", cfg, resume=True)
    assert resumed["valid"] == full["valid"] and resumed["best_epoch"] == full["best_epoch"] and resumed["epochs_run"] == 2
    cpu = load_training_state(state_path)["progress"]["epoch_cpu_seconds"]
    assert len(cpu) == 1 and resumed["cpu_seconds_per_epoch"] == cpu[0] > 0  # the cut epoch's clock saw only its end: not counted


def test_each_epoch_records_its_cpu_time_across_a_ctrl_c(tmp_path, monkeypatch):
    """Core-hours come from the process's CPU clock, which a pause (SIGSTOP) or a crowded core does
    not inflate the way wall time does; a cut epoch counts its CPU time before the cut too."""
    cfg = SPTConfig(epochs=2, batch_size=4, patience=5)
    _interrupt_at_step(monkeypatch, 3)
    with pytest.raises(TrainingInterrupted):
        _train(tmp_path, cfg, resume=False)
    monkeypatch.undo()
    partial = load_training_state(tmp_path / "checkpoints" / "spt_last.pt")["progress"]["epoch_partial_cpu_seconds"]
    summary = _train(tmp_path, cfg, resume=True)
    cpu = load_training_state(tmp_path / "checkpoints" / "spt_last.pt")["progress"]["epoch_cpu_seconds"]
    assert partial > 0 and len(cpu) == 2 and cpu[0] > partial and all(seconds > 0 for seconds in cpu)
    assert summary["cpu_seconds_per_epoch"] == pytest.approx(sum(cpu) / 2)  # the median of two


def test_a_progress_this_version_cannot_read_is_refused_naming_the_version_that_wrote_it(tmp_path):
    _train(tmp_path, SPTConfig(epochs=1, batch_size=16), resume=False)
    state_path = tmp_path / "checkpoints" / "spt_last.pt"
    state = load_training_state(state_path)
    save_training_state(state_path, {**state, "lares_rl_version": "9.9", "progress": {**state["progress"], "phase_two": 1}})
    with pytest.raises(
        LaresError, match=r"written by lares_rl 9\.9 and holds phase_two, unknown here .*resume it with the version that wrote it"
    ):
        _train(tmp_path, SPTConfig(epochs=2, batch_size=16), resume=True)
    old = before_run_state_core(state)
    del old["progress"]["seen_rows"]
    save_training_state(state_path, old)
    with pytest.raises(LaresError, match=r"written by lares_rl 0\.1\.0 or earlier \(it records no version\) and lacks seen_rows"):
        _train(tmp_path, SPTConfig(epochs=2, batch_size=16), resume=True)
