"""Recommender API and ``lares-rl recommend`` CLI on a tiny trained checkpoint (original ids i1..i12)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from lares_rl.core.errors import LaresError
from lares_rl.data import SequenceData
from lares_rl.policies.reasoner import LaresReasoner
from lares_rl.serve.cli import main
from lares_rl.serve.recommender import HistoryTruncatedWarning, Recommendation, Recommender
from tests.tiny_checkpoint import IDS, MAX_LEN, N, save_ring_checkpoint


def tiny_sasrec() -> LaresReasoner:
    """A 5-item reasoner without a reasoning core (SASRec): nothing to set a depth of."""
    return LaresReasoner(
        5, max_len=4, d_model=8, n_heads=2, inner_size=16, n_core_layers=0, step_sampler="none", t0_init="zero", mean_recurrence=1
    )


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_ring_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", steps=15)


@pytest.fixture(scope="module")
def rec(checkpoint):
    return Recommender.from_checkpoint(checkpoint, device="cpu", deterministic=True)


def test_top_k_order_original_ids_and_titles(rec):
    [r] = rec.recommend([["i1", "i2", "i3"]], top_k=5)
    assert isinstance(r, Recommendation)
    assert len(r.items) == len(r.scores) == 5 and len(set(r.items)) == 5
    assert set(r.items) <= set(IDS) and "<pad>" not in r.items
    assert r.scores == sorted(r.scores, reverse=True)
    assert r.titles == [f"Title {item[1:]}" for item in r.items]
    assert r.unknown_items == [] and r.truncated is False


def test_exclude_seen_and_padding(rec):
    history = ["i4", "i5", "i6"]
    [excluded] = rec.recommend([history], top_k=N)
    assert len(excluded.items) == N - 3 and not set(history) & set(excluded.items)  # fewer left than top_k
    [included] = rec.recommend([history], top_k=N, exclude_seen=False)
    assert sorted(included.items) == sorted(IDS)  # the whole catalog, never the padding item
    assert [x for x in included.items if x not in history] == excluded.items


def test_unknown_items_reported_and_skipped(rec):
    [r] = rec.recommend([["i1", "nope", "i2", "<pad>", 999]], top_k=4)
    assert r.unknown_items == ["nope", "<pad>", "999"]
    assert rec.recommend([np.array(["i1", "nope", "i2"])], top_k=4)[0].items == r.items  # numpy histories work too
    [clean] = rec.recommend([["i1", "i2"]], top_k=4)
    assert r.items == clean.items and r.scores == clean.scores


def test_int_and_str_ids_are_the_same_item(checkpoint):
    base = Recommender.from_checkpoint(checkpoint, device="cpu", deterministic=True)
    numeric = Recommender(base.policy, ["<pad>", *[str(10 * i) for i in range(1, N + 1)]], MAX_LEN, device="cpu", deterministic=True)
    [a], [b] = numeric.recommend([[10, "20", 30]], top_k=3), numeric.recommend([["10", "20", "30"]], top_k=3)
    assert a == b and a.titles is None


def test_truncation_flagged_with_one_warning(rec):
    long = [f"i{i}" for i in range(1, 9)]  # 8 known items > max_len 5
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = rec.recommend([long, ["i1", "i2"], long[::-1]], top_k=3, exclude_seen=False)
    assert [r.truncated for r in out] == [True, False, True]
    assert len(caught) == 1 and issubclass(caught[0].category, HistoryTruncatedWarning)
    assert "2 of 3" in str(caught[0].message) and "max_len=5" in str(caught[0].message)
    [recent] = rec.recommend([long[-MAX_LEN:]], top_k=3, exclude_seen=False)
    assert out[0].items == recent.items
    np.testing.assert_allclose(out[0].scores, recent.scores, rtol=1e-5, atol=1e-6)  # batch of 3 vs 1: float rounding
    with pytest.warns(HistoryTruncatedWarning):
        [excluded] = rec.recommend([long], top_k=3)  # exclusion covers the whole history, not only the window
    assert not set(excluded.items) & set(long)


def test_record_mode_answers_the_rest_and_cold_start_gives_training_popularity(rec, checkpoint):
    results = rec.recommend([["i1"], [], ["x"], "i1", ["i2"]], top_k=2, on_invalid="record")
    assert [r.error is None for r in results] == [True, False, False, False, True]
    assert results[1].error.startswith("the history is empty") and results[1].items == []
    assert results[4].items == rec.recommend([["i2"]], top_k=2)[0].items  # scored rows are unaffected by the bad ones
    cold = rec.recommend([[], ["x"], ["i1"]], top_k=3, cold_start=True)
    assert [r.cold_start for r in cold] == [True, True, False] and cold[0].items == cold[1].items and cold[1].unknown_items == ["x"]
    # popularity is counted over the training part only: each user's last two items are held out
    from lares_rl.core.checkpoint import training_item_counts

    assert training_item_counts(SequenceData.from_sequences([[1, 2, 3, 3], [2, 1, 3]], num_items=3)).tolist() == [0, 1, 2, 0]
    assert len(rec.item_counts) == N + 1 and rec.item_counts.sum() == N * 4  # 12 users with 6 items, 4 of them training
    with pytest.raises(LaresError, match="on_invalid='skip' is invalid; use 'raise'"):
        rec.recommend([["i1"]], on_invalid="skip")
    bare = Recommender(rec.policy, rec.item_ids, MAX_LEN, deterministic=True)
    with pytest.raises(LaresError, match="cold_start=True needs item popularity"):
        bare.recommend([[]], cold_start=True)
    with pytest.raises(LaresError, match="item_counts has 3 entries but the catalog has 13"):
        Recommender(rec.policy, rec.item_ids, MAX_LEN, item_counts=[1, 2, 3])


def test_bad_histories_and_top_k(rec):
    with pytest.raises(LaresError, match="history 1 is empty"):
        rec.recommend([["i1"], []])
    with pytest.raises(LaresError, match="history 0 has no item id known"):
        rec.recommend([["x", "y"]])
    with pytest.raises(LaresError, match="history 0 must be a list"):
        rec.recommend(["i1"])
    for bad in (0, N + 1):
        with pytest.raises(LaresError, match=rf"top_k={bad}.*N={N}"):
            rec.recommend([["i1"]], top_k=bad)


def test_deterministic_repeatable_and_batch_equals_single(checkpoint, rec):
    histories = [["i1"], ["i2", "i3", "i4"], [f"i{i}" for i in range(1, 12)], ["i9", "i2"], ["i5", "i6", "i7", "i8"]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HistoryTruncatedWarning)
        first = rec.recommend(histories, top_k=4, batch_size=2)
        again = Recommender.from_checkpoint(checkpoint, device="cpu", deterministic=True).recommend(histories, top_k=4, batch_size=2)
        single = [rec.recommend([h], top_k=4)[0] for h in histories]
    assert first == again  # bit-identical for an identical call
    for a, b in zip(first, single):
        assert a.items == b.items
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5, atol=1e-6)


def test_default_mode_draws_t0_noise(checkpoint):
    noisy = Recommender.from_checkpoint(checkpoint, device="cpu")
    torch.manual_seed(1)
    a = noisy.recommend([["i1", "i2"]], top_k=3)[0].scores
    b = noisy.recommend([["i1", "i2"]], top_k=3)[0].scores
    torch.manual_seed(1)
    assert a != b and noisy.recommend([["i1", "i2"]], top_k=3)[0].scores == a  # noise from the global RNG


def test_seed_replays_the_noise_without_touching_the_global_rng(checkpoint):
    noisy = Recommender.from_checkpoint(checkpoint, device="cpu")
    torch.manual_seed(5)
    expected_next = torch.rand(1)
    torch.manual_seed(5)
    a = noisy.recommend([["i1", "i2"]], top_k=3, seed=7)
    assert noisy.recommend([["i1", "i2"]], top_k=3, seed=7) == a != noisy.recommend([["i1", "i2"]], top_k=3, seed=8)
    assert torch.rand(1) == expected_next
    with pytest.raises(LaresError, match="seed="):
        noisy.recommend([["i1"]], seed=1.5)


def test_checkpoint_errors(tmp_path, checkpoint):
    with pytest.raises(LaresError, match="does not exist"):
        Recommender.from_checkpoint(tmp_path / "missing.pt", device="cpu")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(checkpoint.read_bytes()[:300])
    with pytest.raises(LaresError, match="corrupt"):
        Recommender.from_checkpoint(corrupt, device="cpu")
    with pytest.raises(LaresError, match="k=0"):
        Recommender.from_checkpoint(checkpoint, device="cpu", k=0)


# ---------------------------------------------------------------------------------------- CLI


def _rows(text):
    return [json.loads(line) for line in text.splitlines()]


def test_cli_stdin_to_stdout(checkpoint, monkeypatch, capsys):
    long = json.dumps(IDS[:8])
    monkeypatch.setattr(sys, "stdin", io.StringIO(f'["i1", "i2"]\n\n{{"user": "u7", "history": ["i3", "zzz"]}}\n{long}\n{long}\n'))
    assert main(["--checkpoint", str(checkpoint), "--top-k", "3", "--deterministic"]) == 0
    captured = capsys.readouterr()
    rows = _rows(captured.out)
    assert [r["user"] for r in rows] == [None, "u7", None, None]
    assert all(len(r["items"]) == 3 and len(r["scores"]) == 3 and len(r["titles"]) == 3 for r in rows)
    assert rows[1]["unknown_items"] == ["zzz"] and rows[1]["truncated"] is False
    assert [r["truncated"] for r in rows] == [False, False, True, True]
    assert captured.err.count("warning:") == 1 and "2 of 4" in captured.err
    assert not {"i1", "i2"} & set(rows[0]["items"])


def test_cli_file_to_file_matches_api(checkpoint, rec, tmp_path, capsys):
    src, dst = tmp_path / "in.jsonl", tmp_path / "out" / "recs.jsonl"
    src.write_text('{"user": 1, "history": ["i1", "i2", "i3"]}\n["i4"]\n')
    assert (
        main(
            [
                "--checkpoint",
                str(checkpoint),
                "--input",
                str(src),
                "--output",
                str(dst),
                "--deterministic",
                "--include-seen",
                "--top-k",
                "2",
            ]
        )
        == 0
    )
    rows = _rows(dst.read_text())
    expected = rec.recommend([["i1", "i2", "i3"], ["i4"]], top_k=2, exclude_seen=False)
    assert [r["items"] for r in rows] == [e.items for e in expected] and rows[0]["user"] == 1


def test_cli_answers_the_good_lines_and_records_each_bad_one(checkpoint, tmp_path, capsys):
    """A service-style batch: every bad line is an error record with its line number (exit 1)."""
    src, dst = tmp_path / "in.jsonl", tmp_path / "recs.jsonl"
    src.write_text(
        '["i1"]\n{"user": 2, "history": [\n\n{"user": 3, "history": []}\n["zzz", "yyy"]\n{"user": 5}\n"i1"\n[["i1"]]\n{"user": 8, "history": ["i2"]}\n'
    )
    assert main(["--checkpoint", str(checkpoint), "--input", str(src), "--output", str(dst), "--top-k", "2"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "6 of 8 lines could not be answered (line 2, 4, 5, 6, 7, 8)" in err, err
    rows = {row["line"]: row for row in _rows(dst.read_text())}
    assert sorted(rows) == [1, 2, 4, 5, 6, 7, 8, 9]  # the blank line 3 is skipped, as before
    assert len(rows[1]["items"]) == 2 and rows[9]["user"] == 8 and len(rows[9]["items"]) == 2 and rows[9]["cold_start"] is False
    assert rows[2]["error"].startswith("not valid JSON") and rows[2]["user"] is None
    assert rows[4]["error"].startswith("the history is empty") and "--cold-start" in rows[4]["error"] and rows[4]["user"] == 3
    assert rows[5]["error"].startswith("the history has no item id known") and "'zzz'" in rows[5]["error"]
    assert (
        'without a "history" key' in rows[6]["error"]
        and "must be a JSON list" in rows[7]["error"]
        and "item ids must be strings" in rows[8]["error"]
    )
    assert all(set(rows[n]) == {"line", "user", "error"} for n in (2, 4, 5, 6, 7, 8))


def test_cli_cold_start_answers_empty_and_unknown_histories_with_popular_items(checkpoint, rec, tmp_path, capsys):
    src, dst = tmp_path / "in.jsonl", tmp_path / "recs.jsonl"
    src.write_text('[]\n["zzz"]\n["i1"]\n')
    assert main(["--checkpoint", str(checkpoint), "--input", str(src), "--output", str(dst), "--top-k", "3", "--cold-start"]) == 0
    rows = _rows(dst.read_text())
    assert [r["cold_start"] for r in rows] == [True, True, False] and rows[1]["unknown_items"] == ["zzz"]
    popular = np.argsort(-rec.item_counts[1:], kind="stable")[:3] + 1
    assert rows[0]["items"] == rows[1]["items"] == [IDS[i - 1] for i in popular]
    assert rows[0]["scores"] == sorted(rows[0]["scores"], reverse=True) and rows[0]["scores"][0] == rec.item_counts[popular[0]]
    payload = torch.load(checkpoint, weights_only=False)
    del payload["item_counts"]  # a checkpoint written before popularity was stored
    old = tmp_path / "old.pt"
    torch.save(payload, old)
    assert main(["--checkpoint", str(old), "--input", str(src), "--cold-start"]) == 2
    assert f"--cold-start needs item popularity, which checkpoint {old} predates; retrain it" in capsys.readouterr().err


def test_cli_errors_that_concern_the_whole_batch_exit_2(checkpoint, tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text('["i1"]\n')
    assert main(["--checkpoint", str(tmp_path / "missing.pt"), "--input", str(src)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["--checkpoint", str(checkpoint), "--input", str(src), "--top-k", "99"]) == 2
    assert "--top-k 99 is larger than the catalog" in capsys.readouterr().err
    for flags, needle in (
        (["--top-k", "0"], "--top-k 0"),
        (["--k", "0"], "--k 0"),
        (["--batch-size", "0"], "--batch-size 0"),
        (["--device", "tpu"], "--device tpu"),
    ):
        assert main(["--checkpoint", str(checkpoint), "--input", str(src), *flags]) == 2
        assert capsys.readouterr().err.startswith(f"error: {needle}")
    assert main(["--checkpoint", str(tmp_path), "--input", str(src)]) == 2
    assert "is a directory" in capsys.readouterr().err
    state = tmp_path / "spt_last.pt"
    torch.save({"format": "lares_rl.training_state/1"}, state)
    assert main(["--checkpoint", str(state), "--input", str(src)]) == 2
    assert (
        f"is a training state (for resume=<run dir>), not a model checkpoint; pass {tmp_path / 'spt_best.pt'} instead"
        in capsys.readouterr().err
    )


def test_cli_reads_its_own_output_bom_and_line_separators(checkpoint, tmp_path, capsys):
    """U+2028 inside a JSON string is not a line break (json.dumps(ensure_ascii=False) writes it
    raw); a UTF-8 byte-order mark is dropped; bytes that are not UTF-8 name their line."""
    src = tmp_path / "in.jsonl"
    src.write_bytes('\ufeff{"user": "a\u2028b", "history": ["i1"]}\r\n["i2"]\n'.encode("utf-8"))
    assert main(["--checkpoint", str(checkpoint), "--input", str(src), "--deterministic"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.split("\n") if line]
    assert [r["user"] for r in rows] == ["a\u2028b", None]
    src.write_bytes(b'["i1"]\n["i2"]\n["\xff"]\n')
    assert main(["--checkpoint", str(checkpoint), "--input", str(src)]) == 2
    assert "line 3 is not UTF-8" in capsys.readouterr().err


def test_cli_default_output_is_reproducible_and_seed_changes_the_noise(checkpoint, tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text('["i1", "i2"]\n["i3"]\n')
    outputs = []
    for extra in ([], [], ["--seed", "1"]):
        assert main(["--checkpoint", str(checkpoint), "--input", str(src), "--top-k", "3", *extra]) == 0
        outputs.append(_rows(capsys.readouterr().out))
    assert outputs[0] == outputs[1] and outputs[0] != outputs[2]


def test_python_dash_m_entry(checkpoint):
    done = subprocess.run(
        [sys.executable, "-m", "lares_rl.serve.cli", "--checkpoint", str(checkpoint), "--deterministic", "--top-k", "2"],
        input='["i1"]\n',
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert len(_rows(done.stdout)[0]["items"]) == 2


def test_depth_on_a_policy_without_reasoning_core_is_an_error():
    """SASRec has no depth: a k would be ignored silently, so it is refused."""
    sasrec = tiny_sasrec()
    ids = ["<pad>", "a", "b", "c", "d", "e"]
    with pytest.raises(LaresError, match="k=2 has no effect: this policy has no reasoning core"):
        Recommender(sasrec, ids, 4, k=2)
    assert len(Recommender(sasrec, ids, 4, deterministic=True).recommend([["a", "b"]], top_k=2)[0].items) == 2


def test_adaptive_depth_reports_the_steps_each_history_took(checkpoint, rec):
    histories = [["i1"], ["i2", "i3", "i4"], ["i9", "i2"]]
    assert [r.steps for r in rec.recommend(histories, top_k=3)] == [2, 2, 2]  # the fixed depth (mean_recurrence=2)
    # a tolerance every state meets stops all at step 2, the first step with a change to measure:
    # the same answers as the fixed depth k=2, at most k_max=4 steps
    settled = Recommender.from_checkpoint(checkpoint, device="cpu", deterministic=True, halt_tol=10.0, k_max=4).recommend(
        histories, top_k=3
    )
    assert [r.steps for r in settled] == [2, 2, 2] and [r.items for r in settled] == [r.items for r in rec.recommend(histories, top_k=3)]
    never = Recommender.from_checkpoint(checkpoint, device="cpu", deterministic=True, halt_tol=1e-30, k_max=4)
    fixed4 = Recommender.from_checkpoint(checkpoint, device="cpu", deterministic=True, k=4)
    assert [r.steps for r in never.recommend(histories, top_k=3)] == [4, 4, 4]
    assert [r.items for r in never.recommend(histories, top_k=3)] == [r.items for r in fixed4.recommend(histories, top_k=3)]
    assert "halt_tol=1e-30, k_max=4" in repr(never)


def test_adaptive_depth_bad_input_names_the_argument(checkpoint):
    for kwargs, needle in (
        ({"halt_tol": 0.0}, "halt_tol=0.0 is invalid"),
        ({"halt_tol": float("nan")}, "halt_tol=nan is invalid"),
        ({"halt_tol": 0.1, "k_max": 0}, "k_max=0 is invalid"),
        ({"k_max": 3}, "k_max=3 has no effect without halt_tol"),
    ):
        with pytest.raises(LaresError, match=needle):
            Recommender.from_checkpoint(checkpoint, device="cpu", **kwargs)
    sasrec = tiny_sasrec()
    with pytest.raises(LaresError, match="halt_tol=0.1 needs a policy with a reasoning core"):
        Recommender(sasrec, ["<pad>", "a", "b", "c", "d", "e"], 4, halt_tol=0.1)
    assert Recommender(sasrec, ["<pad>", "a", "b", "c", "d", "e"], 4).recommend([["a"]], top_k=2)[0].steps is None


def test_cli_halting_adds_steps_to_each_answer(checkpoint, tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text('["i1", "i2"]\n["i3"]\n')
    assert main(["--checkpoint", str(checkpoint), "--input", str(src), "--deterministic"]) == 0
    assert all("steps" not in row for row in _rows(capsys.readouterr().out))  # default output unchanged
    assert main(["--checkpoint", str(checkpoint), "--input", str(src), "--deterministic", "--halt-tol", "10", "--k-max", "3"]) == 0
    assert [row["steps"] for row in _rows(capsys.readouterr().out)] == [2, 2]
    for flags, needle in (
        (["--halt-tol", "0"], "--halt-tol=0.0 is invalid"),
        (["--halt-tol", "nan"], "--halt-tol=nan is invalid"),
        (["--halt-tol", "0.1", "--k-max", "0"], "--k-max=0 is invalid"),
        (["--k-max", "2"], "--k-max=2 has no effect"),
    ):
        assert main(["--checkpoint", str(checkpoint), "--input", str(src), *flags]) == 2
        assert capsys.readouterr().err.startswith(f"error: {needle}")


def test_cli_takes_checkpoint_as_key_value_like_every_other_command(checkpoint, monkeypatch, capsys):
    history = '["i1", "i2"]\n'
    monkeypatch.setattr(sys, "stdin", io.StringIO(history))
    assert main(["--checkpoint", str(checkpoint), "--top-k", "3", "--deterministic"]) == 0
    flag_style = capsys.readouterr().out
    monkeypatch.setattr(sys, "stdin", io.StringIO(history))
    assert main([f"checkpoint={checkpoint}", "--top-k", "3", "--deterministic"]) == 0
    assert capsys.readouterr().out == flag_style
