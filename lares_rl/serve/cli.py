"""``lares-rl recommend`` / ``python -m lares_rl.serve.cli``: top-k items for JSON-lines histories.

    lares-rl recommend --checkpoint run/checkpoints/spt_best.pt --input users.jsonl --output recs.jsonl

Input, one JSON value per line (blank lines are skipped): either a list of original item ids,
``["50", "181", 258]``, or an object ``{"user": <any JSON>, "history": [...]}``. Output, one line
per non-blank input line in the same order: ``{"line", "user", "items", "scores", "titles" (when
the checkpoint has titles), "unknown_items", "truncated", "cold_start"}`` (plus ``"steps"``, the
reasoning steps taken, with ``--halt-tol``); ``user`` is null for list input, ``line`` is the
input line number.

A batch is served like a service: a line that cannot be answered (malformed JSON, an empty
history, only unknown ids, ...) becomes ``{"line", "user", "error"}`` in its place and the other
lines are answered. ``--cold-start`` answers empty and all-unknown histories with the most popular
training items instead (``"cold_start": true``; scores are training interaction counts).

Exit status: 0 every line answered; 1 some lines are error records (stderr lists them); 2 nothing
was answered because of a mistake that concerns the whole batch (flag, checkpoint, unreadable
input), with one ``error:`` line naming the flag or file. The output file is written atomically.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lares_rl.core.atomic import atomic_write_text
from lares_rl.core.errors import LaresError
from lares_rl.core.runtime import resolve_device
from lares_rl.eval.adaptive_depth import check_halting
from lares_rl.serve.recommender import Recommendation, Recommender


def _parser() -> argparse.ArgumentParser:
    """The flags, each helped in a user's words: what it changes and its default."""
    parser = argparse.ArgumentParser(
        prog="lares-rl recommend",
        description="Top-k items for each history in a JSON-lines file, with the data set's own item ids.",
        epilog=(
            'input, one line per user: a JSON list of item ids, ["50", "181"], or {"user": ..., "history": [...]}\n'
            "output, one JSON line per input line: its items, scores and titles (a line that cannot be answered: an error record)\n"
            "example: lares-rl recommend checkpoint=runs/<run>/checkpoints/rpt_best.pt --input users.jsonl --output recs.jsonl"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--checkpoint",
        required=True,
        metavar="PATH",
        help="the model: a .pt file lares-rl wrote (e.g. <run dir>/checkpoints/rpt_best.pt); checkpoint=PATH works too",
    )
    parser.add_argument("--input", default="-", metavar="FILE", help="JSON-lines file of histories; - reads stdin (default)")
    parser.add_argument(
        "--output",
        default="-",
        metavar="FILE",
        help="JSON-lines file for the answers, written whole or not at all; - writes stdout (default)",
    )
    parser.add_argument("--top-k", type=int, default=10, metavar="N", help="items per history (default 10)")
    parser.add_argument(
        "--include-seen", action="store_true", help="allow items already in the history in the answer (left out by default)"
    )
    parser.add_argument(
        "--deterministic",
        action="store_true",
        help="start LARES's reasoning from zeros instead of the random start it is trained with, so the answer needs no seed (default: the random start, seeded by --seed)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, metavar="N", help="seed of LARES's random start: the same input gives the same answer (default 0)"
    )
    parser.add_argument(
        "--k",
        type=int,
        default=None,
        metavar="N",
        help="reasoning steps LARES takes before it scores the items (default: the number the checkpoint was evaluated with; SASRec takes none)",
    )
    parser.add_argument(
        "--halt-tol",
        type=float,
        default=None,
        metavar="X",
        help='stop reasoning early for a history once one more step changes its state by less than this fraction (e.g. 0.1): easy histories take fewer steps; adds "steps" to each answer',
    )
    parser.add_argument(
        "--k-max",
        type=int,
        default=None,
        metavar="N",
        help="the most reasoning steps with --halt-tol (default: --k, else the number the checkpoint was evaluated with)",
    )
    parser.add_argument("--device", default="auto", help="where to compute: auto (default: a GPU when there is one), cpu, cuda or cuda:<n>")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=1024,
        metavar="N",
        help="histories scored at once: more is faster and takes more memory (default 1024)",
    )
    parser.add_argument(
        "--item-chunk",
        type=int,
        default=None,
        metavar="N",
        help="score the catalog N items at a time, so memory does not grow with the catalog (for very large catalogs; default: all items at once)",
    )
    parser.add_argument(
        "--cold-start",
        action="store_true",
        help="answer an empty history, or one of only unknown items, with the most popular training items (default: an error record for that line)",
    )
    return parser


def _read_text(path: str) -> str:
    """The input as text: UTF-8, a leading byte-order mark dropped (editors on Windows write one);
    a decoding error names the line."""
    if path == "-" and not hasattr(sys.stdin, "buffer"):  # a text stream with no bytes below it
        return sys.stdin.read().removeprefix("\ufeff")
    try:
        if path == "-":
            raw = sys.stdin.buffer.read()
        else:
            with open(path, "rb") as handle:
                raw = handle.read()
    except FileNotFoundError as err:
        raise LaresError(f"input file {path} does not exist; pass --input <JSON-lines file> or - for stdin") from err
    except OSError as err:
        raise LaresError(f"cannot read input file {path}: {err.strerror or err}") from err
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        source, line = "stdin" if path == "-" else f"input file {path}", raw[: err.start].count(b"\n") + 1
        raise LaresError(f"{source} line {line} is not UTF-8 text ({err.reason}); save the file as UTF-8") from err


def _lines(text: str) -> list[str]:
    """Lines split on \n only (a trailing \r dropped): str.splitlines would also split inside a
    JSON string holding U+2028 or U+0085, which json.dumps(ensure_ascii=False) writes raw."""
    return [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]


@dataclass
class Line:
    """One non-blank input line: its number, user, and either a history or why it has none."""

    number: int
    user: Any = None
    history: list | None = None
    error: str | None = None


def parse_line(number: int, line: str) -> Line:
    """The history of one input line, or a Line whose ``error`` says what is wrong and how to write it."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        return Line(
            number,
            error=f'not valid JSON ({err.msg} at column {err.colno}); each line must be a list of item ids or {{"user": ..., "history": [...]}}',
        )
    user, history = (record.get("user"), record.get("history")) if isinstance(record, dict) else (None, record)
    if isinstance(record, dict) and "history" not in record:
        return Line(number, user, error='an object without a "history" key; write {"user": ..., "history": [...]}')
    if not isinstance(history, list):
        return Line(number, user, error=f"the history must be a JSON list of item ids, got {type(history).__name__}")
    return Line(number, user, history)


def parse_lines(text: str) -> list[Line]:
    """Every non-blank line of ``text``, parsed (a malformed one carries its error)."""
    return [parse_line(number, line) for number, line in enumerate(_lines(text), start=1) if line.strip()]


def _check_flags(args: argparse.Namespace) -> None:
    """Flag errors in the flags' own names (the API would name its keyword arguments)."""

    if not Path(args.checkpoint).is_file():
        what = "is a directory" if Path(args.checkpoint).is_dir() else "does not exist"
        raise LaresError(
            f"checkpoint {args.checkpoint} {what}; pass --checkpoint <run dir>/checkpoints/spt_best.pt (a .pt file written by lares-rl)"
        )
    for flag, value in (("--top-k", args.top_k), ("--batch-size", args.batch_size), ("--k", args.k), ("--item-chunk", args.item_chunk)):
        if value is not None and value < 1:
            raise LaresError(f"{flag} {value} is invalid; it must be >= 1")
    check_halting(args.halt_tol, args.k_max, "--halt-tol", "--k-max")
    try:
        resolve_device(args.device)
    except LaresError:
        raise LaresError(
            f"--device {args.device} is not usable here ({'no CUDA device is available' if args.device.startswith('cuda') else 'unknown device'}); pass --device auto or --device cpu"
        ) from None


def _output_row(line: Line, rec: Recommendation | None, halting: bool = False) -> dict:
    """The output record of one input line: its answer, or its error (with ``halting``, the
    answer says how many reasoning steps it took)."""
    error = line.error if line.error is not None else rec.error
    if error is not None:
        return {"line": line.number, "user": line.user, "error": error}
    row = {"line": line.number, "user": line.user, "items": rec.items, "scores": rec.scores}
    if rec.titles is not None:
        row["titles"] = rec.titles
    row.update(unknown_items=rec.unknown_items, truncated=rec.truncated, cold_start=rec.cold_start)
    if halting:
        row["steps"] = rec.steps
    return row


def run(args: argparse.Namespace) -> int:
    """Answer every line of the input; the exit status (0: all answered, 1: some error records)."""

    _check_flags(args)
    recommender = Recommender.from_checkpoint(
        args.checkpoint,
        device=args.device,
        k=args.k,
        deterministic=args.deterministic,
        item_chunk=args.item_chunk,
        halt_tol=args.halt_tol,
        k_max=args.k_max,
    )
    if args.top_k > recommender.num_items:
        raise LaresError(
            f"--top-k {args.top_k} is larger than the catalog of {args.checkpoint} ({recommender.num_items} items); lower --top-k"
        )
    if args.cold_start and recommender.item_counts is None:
        raise LaresError(
            f"--cold-start needs item popularity, which checkpoint {args.checkpoint} predates; retrain it with this lares_rl, or drop --cold-start"
        )
    lines = parse_lines(_read_text(args.input))
    valid = [line for line in lines if line.error is None]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        recs = recommender.recommend(
            [line.history for line in valid],
            top_k=args.top_k,
            exclude_seen=not args.include_seen,
            batch_size=args.batch_size,
            seed=args.seed,
            cold_start=args.cold_start,
            on_invalid="record",
        )
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    answers = dict(zip((line.number for line in valid), recs))
    rows = [_output_row(line, answers.get(line.number), halting=args.halt_tol is not None) for line in lines]
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    if args.output == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        atomic_write_text(args.output, text)
        print(f"[lares-rl] {len(rows)} answers -> {args.output}", file=sys.stderr)
    source = "stdin" if args.input == "-" else f"input file {args.input}"
    failed = [row["line"] for row in rows if "error" in row]
    if failed:
        shown = ", ".join(map(str, failed[:10])) + (", ..." if len(failed) > 10 else "")
        print(
            f'warning: {source}: {len(failed)} of {len(rows)} lines could not be answered (line {shown}); their output records carry "error" with the reason and the fix, the other lines were answered',
            file=sys.stderr,
        )
    return 1 if failed else 0


def _key_value_style(argv: list[str]) -> list[str]:
    """``checkpoint=PATH`` (the form every other lares-rl command takes) as ``--checkpoint PATH``."""
    out: list[str] = []
    for arg in argv:
        out += ["--checkpoint", arg.removeprefix("checkpoint=")] if arg.startswith("checkpoint=") else [arg]
    return out


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run, return the exit status (0 all answered, 1 some
    lines are error records, 2 a mistake that stops the whole batch)."""
    try:
        args = _parser().parse_args(_key_value_style(sys.argv[1:] if argv is None else argv))
    except SystemExit as exit_:  # argparse: --help (0) or a usage error (2, message already printed)
        return int(exit_.code or 0)
    try:
        return run(args)
    except LaresError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
