"""Beyond-accuracy rewards, the item context they are bound to, and the weighted combination
chosen from the config, including user rewards that ask for context the data set lacks."""

import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from lares_rl.core.errors import LaresError
from lares_rl.data import SequenceData
from lares_rl.eval.exposure import build_item_context, top_k_exposure
from lares_rl.rewards import REWARDS, diversity, embedding_diversity, long_tail, ndcg, novelty, unexposed
from lares_rl.rewards.build import instantiate_reward
from lares_rl.rewards.context import ItemContext, context_needs, item_categories
from lares_rl.rpt.config import RPTConfig
from tests.fixtures_data import write_atomic
from tests.synthetic import tiny_reasoner

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
POPULARITY = torch.tensor([0.0, 6.0, 2.0, 1.0, 1.0])  # C = 10, N = 4
CATEGORIES = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
SLATE = torch.tensor([[1, 2, 3], [3, 4, 1]])
TARGET = torch.tensor([2, 2])
EXPOSURE = torch.tensor([0.0, 5.0, 0.0, 2.0, 0.0])  # items 2 and 4 are in nobody's top 10
CONTEXT = ItemContext(
    popularity=POPULARITY, categories=CATEGORIES, item_embeddings=CATEGORIES + 0.5, dataset="tiny", exposure_source=lambda: EXPOSURE
)


def needs_popularity(slate, target, popularity, k=2):
    """A user reward living outside lares_rl that asks for the training popularity."""
    return popularity[slate[:, :k]].mean(dim=1)


def needs_categories(slate, target, categories):
    return categories[slate].sum(dim=(1, 2))


def test_novelty_is_normalised_self_information():
    information = torch.tensor([-math.log2((c + 1) / 14) for c in POPULARITY.tolist()])
    expected = information[SLATE[:, :2]].mean(dim=1) / information.max()
    torch.testing.assert_close(novelty(SLATE, TARGET, POPULARITY, k=2), expected)
    assert ((novelty(SLATE, TARGET, POPULARITY) > 0) & (novelty(SLATE, TARGET, POPULARITY) <= 1)).all()


def test_long_tail_counts_items_outside_the_popularity_head():
    # item 1 alone holds 60% of interactions: with head_share 0.5 the head is {1}
    torch.testing.assert_close(long_tail(SLATE, TARGET, POPULARITY, k=3), torch.tensor([2 / 3, 2 / 3]))
    # 0.7 needs items 1 and 2 (80%)
    torch.testing.assert_close(long_tail(SLATE, TARGET, POPULARITY, k=3, head_share=0.7), torch.tensor([1 / 3, 2 / 3]))
    with pytest.raises(LaresError, match="head_share"):
        long_tail(SLATE, TARGET, POPULARITY, head_share=1.0)


def test_unexposed_is_the_share_of_items_nobody_is_shown():
    torch.testing.assert_close(unexposed(SLATE, TARGET, EXPOSURE, k=3), torch.tensor([1 / 3, 1 / 3]))
    torch.testing.assert_close(unexposed(SLATE, TARGET, EXPOSURE, k=2), torch.tensor([0.5, 0.5]))
    torch.testing.assert_close(unexposed(SLATE, TARGET, EXPOSURE, k=1), torch.tensor([0.0, 0.0]))


def test_exposure_counts_each_users_evaluation_top_k_once_and_is_computed_on_first_use():
    data = SequenceData.from_sequences([[1, 2, 3, 4, 5, 6], [2, 3, 4, 5, 6, 7], [7, 6, 5, 4, 3, 2]], num_items=9)
    policy = tiny_reasoner(9, 5, d_model=8, inner_size=16)
    counts = top_k_exposure(policy, data, max_len=5, k=3)
    assert counts.sum() == 3 * 3 and counts[0] == 0 and counts.max() <= 3  # 3 users x top 3, no padding, one count per user
    seqs, lengths, _ = data.eval_inputs("valid", 5)
    policy.eval()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        top = policy.scores(policy.encode(seqs, lengths)[:, -1]).topk(3, dim=-1).indices
    assert torch.equal(counts, torch.bincount(top.reshape(-1), minlength=10).float())
    calls = []
    context = build_item_context(data, {"max_len": 5}, policy)
    object.__setattr__(context, "exposure_source", lambda: calls.append(1) or counts)
    assert torch.equal(context.exposure, counts) and torch.equal(context.exposure, counts) and calls == [1]
    assert build_item_context(data, {}, policy).exposure is None  # no max_len: no exposure
    node = OmegaConf.create({"_target_": "lares_rl.rewards.unexposed", "_partial_": True})
    with pytest.raises(LaresError, match=r"asks for 'exposure'.*no SPT model to measure exposure with"):
        instantiate_reward(node, 9, build_item_context(data, {}, policy))


def test_diversity_from_categories_and_from_embeddings():
    # [1, 2]: same category -> 0; [3, 4]: cos = 1/sqrt(2)
    torch.testing.assert_close(diversity(SLATE, TARGET, CATEGORIES, k=2), torch.tensor([0.0, 1 - 1 / math.sqrt(2)]))
    out = embedding_diversity(SLATE, TARGET, CONTEXT.item_embeddings, k=3)
    assert out.shape == (2,) and ((out >= 0) & (out <= 1)).all()


def test_context_fields_are_bound_by_parameter_name():
    assert context_needs(needs_popularity) == ["popularity"] and context_needs(ndcg) == []
    fn = instantiate_reward(OmegaConf.create({"_target_": f"{__name__}.needs_popularity", "_partial_": True}), 4, CONTEXT)
    torch.testing.assert_close(fn(SLATE, TARGET), torch.tensor([4.0, 1.0]))


def test_a_reward_asking_for_missing_context_fails_before_training():
    no_categories = ItemContext(popularity=POPULARITY, item_embeddings=CATEGORIES, dataset="beauty")
    node = OmegaConf.create({"_target_": f"{__name__}.needs_categories", "_partial_": True})
    with pytest.raises(LaresError, match=r"needs_categories.*asks for 'categories'.*data set 'beauty' does not have.*embedding_diversity"):
        instantiate_reward(node, 4, no_categories)
    with pytest.raises(LaresError, match="no item context"):
        instantiate_reward(node, 4, None)


@pytest.mark.parametrize("name", ["novelty", "long_tail", "diversity", "embedding_diversity", "unexposed"])
def test_weighted_config_is_ndcg_plus_lambda_times_the_term(name):
    root = OmegaConf.create({"rpt": {"slate_size": 3}, "reward": OmegaConf.load(CONFIG_DIR / "reward" / f"{name}.yaml")})
    root.reward.weights[name] = 0.5
    fn = instantiate_reward(root.reward, 4, CONTEXT)
    field = {
        "novelty": "popularity",
        "long_tail": "popularity",
        "diversity": "categories",
        "embedding_diversity": "item_embeddings",
        "unexposed": "exposure",
    }[name]
    expected = ndcg(SLATE, TARGET, k=3) + 0.5 * REWARDS[name](SLATE, TARGET, getattr(CONTEXT, field), k=10)
    torch.testing.assert_close(fn(SLATE, TARGET), expected)


def test_weighted_terms_and_weights_must_match():
    root = OmegaConf.create({"rpt": {"slate_size": 3}, "reward": OmegaConf.load(CONFIG_DIR / "reward" / "novelty.yaml")})
    del root.reward.weights["novelty"]
    with pytest.raises(LaresError, match="reward.terms.*reward.weights.*same terms"):
        instantiate_reward(root.reward, 4, CONTEXT)


def test_item_categories_come_from_the_class_column(tmp_path):
    from lares_rl.data import DatasetConfig, load_dataset

    data = load_dataset(
        DatasetConfig(name="tiny", path=str(write_atomic(tmp_path / "log.inter")), user_core=1, item_core=1), tmp_path / "cache"
    )
    item_file = tmp_path / "log.item"
    item_file.write_text("item_id:token\ttitle:token_seq\tclass:token_seq\n3\tA\tDrama Comedy\n7\tB\tDrama\n99\tC\tHorror\n")
    categories = item_categories(data, {"item_file": str(item_file), "item_col": "item_id"})
    index = {str(original): i for i, original in enumerate(data.item_ids)}
    assert categories.shape == (data.num_items + 1, 2)  # Comedy, Drama (item 99 is not in the data)
    assert (
        categories[index["3"]].tolist() == [1.0, 1.0]
        and categories[index["7"]].tolist() == [0.0, 1.0]
        and categories[index["5"]].sum() == 0
    )
    (tmp_path / "plain.item").write_text("item_id:token\ttitle:token_seq\n3\tA\n")
    assert item_categories(data, {"item_file": str(tmp_path / "plain.item")}) is None
    context = build_item_context(data, {"item_file": str(tmp_path / "plain.item")})
    assert context.categories is None and context.item_embeddings is None and context.popularity[0] == 0


def test_selection_score_trades_ndcg_for_the_selected_metric():
    cfg = RPTConfig(select_metric="coverage@10", select_tolerance=0.03)
    start = {"ndcg@10": 0.10, "coverage@10": 0.5}
    assert cfg.selection_score({"ndcg@10": 0.098, "coverage@10": 0.6}, start) == 0.6
    assert cfg.selection_score({"ndcg@10": 0.096, "coverage@10": 0.9}, start) == float("-inf")
    assert RPTConfig().selection_score({"ndcg@10": 0.11}, start) == 0.11
    with pytest.raises(LaresError, match="rpt.select_metric='coverage@10' is not a validation metric"):
        cfg.selection_score({"ndcg@10": 0.1}, start)
    with pytest.raises(LaresError, match="rpt.select_metric: must be <metric>@<K>"):
        RPTConfig(select_metric="coverage").validate()
