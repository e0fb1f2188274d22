"""benchmarks/speed.py and speed_profile.py run end to end on ML-100K at a few steps, and skip
the Instruments file with one line when it is absent (no test needs it)."""

import json

from tests.cli_process import run_benchmark


def test_speed_writes_ratios_and_skips_missing_instruments(tmp_path):
    out = tmp_path / "speed.json"
    result = run_benchmark(
        "speed.py",
        "--data-dir",
        str(tmp_path),
        "--spt-steps",
        "1",
        "--eval-users",
        "64",
        "--eval-repeats",
        "1",
        "--out",
        str(out),
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[skip] instruments" in result.stdout and "amazon2023-instruments-5core.txt not found" in result.stdout
    payload = json.loads(out.read_text())
    assert set(payload["ratios"]) == {"spt_lares_ml-100k", "spt_sasrec_ml-100k", "eval_ml-100k"}
    assert all(ratio > 0 for ratio in payload["ratios"].values())
    assert payload["skipped"] == ["instruments"]
    assert payload["parts"]["spt_lares_ml-100k"]["new_path"] == "spt.catalog_loss=auto (full at 1,349 items)"


def test_speed_profile_writes_its_tables(tmp_path):
    out = tmp_path / "profile.md"
    result = run_benchmark(
        "speed_profile.py",
        "--data-dir",
        str(tmp_path),
        "--steps",
        "1",
        "--eval-users",
        "64",
        "--floor-repeats",
        "1",
        "--out",
        str(out),
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    text = out.read_text()
    for heading in (
        "ml-100k, lares: one SPT step",
        "ml-100k, sasrec: one SPT step",
        "ml-100k, lares: one evaluation pass",
        "instruments: skipped",
    ):
        assert heading in text
    for part in (
        "catalog CE fwd",
        "catalog CE bwd",
        "anchor pass bwd",
        "TLA/SLA fwd+bwd",
        "Adam",
        "eval: catalog scores",
        "minor page faults",
    ):
        assert part in text
