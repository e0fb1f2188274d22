"""Raw interactions -> ``SequenceData``: k-core, short-user drop, id remapping, chronological sort.

Ids are remapped in sorted order of the original ids (numeric order when every id is an
integer), so the mapping depends only on which ids survive filtering, not on row order in the
file; ``1..N`` are items and ``0`` stays free for padding. Duplicated rows are kept: each is one
interaction (a re-watch or re-purchase counts towards the cores and appears twice in the sequence).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from lares_rl.core.errors import LaresError
from lares_rl.data.filters import counts, kcore_mask
from lares_rl.data.loaders import RawInteractions
from lares_rl.data.sequences import PAD_TOKEN, SequenceData

logger = logging.getLogger("lares_rl.data")

# leave-one-out needs >= 1 training item, a validation target and a test target
MIN_USER_ITEMS = 3


def build_sequences(
    raw: RawInteractions,
    *,
    user_core: int,
    item_core: int,
    titles: dict[str, str] | None,
    fingerprint: str,
    source: Path,
    name: str,
) -> SequenceData:
    """Filter, remap and sort ``raw`` into per-user chronological sequences."""
    user_codes, user_uniques = pd.factorize(raw.users)
    item_codes, item_uniques = pd.factorize(raw.items)
    user_codes = user_codes.astype(np.int64)
    item_codes = item_codes.astype(np.int64)

    everything = np.ones(len(user_codes), dtype=bool)
    before = counts(user_codes, item_codes, everything)
    logger.info("%s: raw %s", source, _fmt(before))
    cored = kcore_mask(user_codes, item_codes, user_core, item_core)
    after_core = counts(user_codes, item_codes, cored)
    logger.info("%s: after %d/%d-core (user/item) %s", source, user_core, item_core, _fmt(after_core))
    if not after_core["interactions"]:
        raise LaresError(
            f"{source}: no interactions left after the iterative k-core filter "
            f"(dataset.user_core={user_core}, dataset.item_core={item_core}); before filtering: {_fmt(before)}. "
            "Lower dataset.user_core / dataset.item_core or use a larger file"
        )
    # Re-running the core with the leave-one-out minimum keeps the item threshold intact after
    # short users go; with user_core >= 3 it changes nothing.
    final = kcore_mask(user_codes, item_codes, max(user_core, MIN_USER_ITEMS), item_core, keep=cored)
    after_short = counts(user_codes, item_codes, final)
    dropped = after_core["users"] - after_short["users"]
    if dropped:
        logger.info("%s: dropped %d users with < %d interactions: %s", source, dropped, MIN_USER_ITEMS, _fmt(after_short))
    if not after_short["interactions"]:
        raise LaresError(
            f"{source}: no user has the {MIN_USER_ITEMS} interactions the leave-one-out split needs after filtering "
            f"(after k-core: {_fmt(after_core)}); use a file with longer user histories"
        )

    rows = np.flatnonzero(final)
    user_new, user_ids = _remap(user_codes[rows], user_uniques, start=0)
    item_new, item_ids = _remap(item_codes[rows], item_uniques, start=1)
    keys = (rows, user_new) if raw.times is None else (rows, raw.times[rows], user_new)
    order = np.lexsort(keys)  # by user, then time, then file position: ties keep file order
    per_user = np.bincount(user_new, minlength=len(user_ids))
    item_id_array = np.concatenate([[PAD_TOKEN], item_ids]).astype(np.str_)
    filter_log = {
        "user_core": user_core,
        "item_core": item_core,
        **{f"raw_{k}": v for k, v in before.items()},
        **{f"kcore_{k}": v for k, v in after_core.items()},
        "dropped_short_users": dropped,
        **{f"final_{k}": v for k, v in after_short.items()},
    }
    return SequenceData(
        items=item_new[order].astype(np.int64),
        offsets=np.concatenate([[0], np.cumsum(per_user)]).astype(np.int64),
        num_items=len(item_ids),
        user_ids=user_ids.astype(np.str_),
        item_ids=item_id_array,
        item_titles=None if titles is None else _titles(item_id_array, titles),
        fingerprint=fingerprint,
        source=str(source),
        filter_log=filter_log,
        name=name,
    )


def _remap(codes: np.ndarray, uniques: np.ndarray, start: int) -> tuple[np.ndarray, np.ndarray]:
    """New ids ``start..`` for the kept codes in sorted original-id order, and the originals per new id."""
    kept = np.unique(codes)
    originals = np.asarray(uniques, dtype=object)[kept].astype(str)
    order = _id_order(originals)
    lookup = np.empty(int(kept.max()) + 1, dtype=np.int64)
    lookup[kept[order]] = np.arange(start, start + len(kept), dtype=np.int64)
    return lookup[codes], originals[order]


def _id_order(ids: np.ndarray) -> np.ndarray:
    """Argsort of string ids: numerically when all are plain integers (``"2" < "10"``), else lexically."""
    numeric = pd.Series(ids).str.fullmatch(r"\d{1,18}").all()
    if numeric:
        return np.lexsort((ids, ids.astype(np.int64)))
    return np.argsort(ids, kind="stable")


def _titles(item_ids: np.ndarray, titles: dict[str, str]) -> np.ndarray:
    """Title per remapped item (``""`` when the item file lacks it), padding slot included."""
    return np.array([PAD_TOKEN] + [titles.get(i, "") for i in item_ids[1:]], dtype=np.str_)


def _fmt(c: dict[str, int]) -> str:
    return f"{c['users']} users / {c['items']} items / {c['interactions']} interactions"
