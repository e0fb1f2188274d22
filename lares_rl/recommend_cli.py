"""``lares-rl recommend`` / ``python -m lares_rl.recommend_cli``: top-k items for JSON-lines histories.

    lares-rl recommend --checkpoint run/checkpoints/spt_best.pt --input users.jsonl --output recs.jsonl

Input, one JSON value per line (blank lines are skipped): either a list of original item ids,
``["50", "181", 258]``, or an object ``{"user": <any JSON>, "history": [...]}``. Output, one line
per input line in the same order: ``{"user", "items", "scores", "titles" (when the checkpoint has
titles), "unknown_items", "truncated"}``; ``user`` is null for list input.

Nothing is written unless every line succeeded: the output file is written atomically at the end.
A user mistake (bad line, missing checkpoint, bad option) prints one ``error:`` line naming the
line or file and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any

from .errors import LaresError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lares-rl recommend", description="Top-k recommendations for JSON-lines histories (original item ids).")
    parser.add_argument("--checkpoint", required=True, help="checkpoint .pt written by lares-rl (e.g. <run dir>/checkpoints/spt_best.pt)")
    parser.add_argument("--input", default="-", help="JSON-lines file of histories; - reads stdin (default)")
    parser.add_argument("--output", default="-", help="JSON-lines output file, written atomically; - writes stdout (default)")
    parser.add_argument("--top-k", type=int, default=10, help="items per history (default 10)")
    parser.add_argument("--include-seen", action="store_true", help="allow items of the history in the output (excluded by default)")
    parser.add_argument("--deterministic", action="store_true", help="no T0 noise, fixed depth (instead of seeded noise)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the T0 noise: identical input gives identical output (default 0)")
    parser.add_argument("--k", type=int, default=None, help="reasoning depth (default: the checkpoint's evaluation depth)")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:<n>")
    parser.add_argument("--batch-size", type=int, default=1024, help="histories per forward pass (default 1024)")
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


def parse_lines(text: str, source: str = "input") -> tuple[list[Any], list[list], list[int]]:
    """(users, histories, line numbers) of the non-blank lines; a malformed line is a LaresError."""
    users, histories, line_numbers = [], [], []
    for number, line in enumerate(_lines(text), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise LaresError(f"{source} line {number} is not valid JSON ({err.msg} at column {err.colno}); each line must be a list of item ids or {{\"user\": ..., \"history\": [...]}}") from None
        if isinstance(record, dict):
            if "history" not in record:
                raise LaresError(f"{source} line {number} is an object without a \"history\" key; write {{\"user\": ..., \"history\": [...]}}")
            user, history = record.get("user"), record["history"]
        else:
            user, history = None, record
        if not isinstance(history, list):
            raise LaresError(f"{source} line {number}: the history must be a JSON list of item ids, got {type(history).__name__}")
        users.append(user)
        histories.append(history)
        line_numbers.append(number)
    return users, histories, line_numbers


def _check_flags(args: argparse.Namespace) -> None:
    """Flag errors in the flags' own names (the API would name its keyword arguments)."""
    from .runtime import resolve_device

    if not Path(args.checkpoint).is_file():
        what = "is a directory" if Path(args.checkpoint).is_dir() else "does not exist"
        raise LaresError(f"checkpoint {args.checkpoint} {what}; pass --checkpoint <run dir>/checkpoints/spt_best.pt (a .pt file written by lares-rl)")
    for flag, value in (("--top-k", args.top_k), ("--batch-size", args.batch_size), ("--k", args.k)):
        if value is not None and value < 1:
            raise LaresError(f"{flag} {value} is invalid; it must be >= 1")
    try:
        resolve_device(args.device)
    except LaresError:
        raise LaresError(f"--device {args.device} is not usable here ({'no CUDA device is available' if args.device.startswith('cuda') else 'unknown device'}); pass --device auto or --device cpu") from None


def run(args: argparse.Namespace) -> None:
    from .atomic import atomic_write_text
    from .recommender import InvalidHistoryError, Recommender

    _check_flags(args)
    source = "stdin" if args.input == "-" else f"input file {args.input}"
    recommender = Recommender.from_checkpoint(args.checkpoint, device=args.device, k=args.k, deterministic=args.deterministic)
    if args.top_k > recommender.num_items:
        raise LaresError(f"--top-k {args.top_k} is larger than the catalog of {args.checkpoint} ({recommender.num_items} items); lower --top-k")
    users, histories, line_numbers = parse_lines(_read_text(args.input), source)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            recs = recommender.recommend(histories, top_k=args.top_k, exclude_seen=not args.include_seen, batch_size=args.batch_size, seed=args.seed)
        except InvalidHistoryError as err:
            raise LaresError(f"{source} line {line_numbers[err.index]}: the history {err.reason}") from None
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    lines = []
    for user, rec in zip(users, recs):
        row = {"user": user, "items": rec.items, "scores": rec.scores}
        if rec.titles is not None:
            row["titles"] = rec.titles
        row.update(unknown_items=rec.unknown_items, truncated=rec.truncated)
        lines.append(json.dumps(row, ensure_ascii=False) + "\n")
    text = "".join(lines)
    if args.output == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        atomic_write_text(args.output, text)
        print(f"[lares-rl] {len(recs)} recommendations -> {args.output}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run, return the exit status (0 ok, 2 user error)."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exit_:  # argparse: --help (0) or a usage error (2, message already printed)
        return int(exit_.code or 0)
    try:
        run(args)
    except LaresError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
