"""policy=mostpop: the training-popularity floor, ranked without ever counting a held-out item,
evaluated and checkpointed like any other policy."""

from collections import Counter
from importlib.resources import files

import torch
from omegaconf import OmegaConf

from lares_rl.catalog.topk import chunked_top_k
from lares_rl.core.checkpoint import build_policy, load_checkpoint, policy_from_checkpoint, save_checkpoint
from lares_rl.core.config import to_plain
from lares_rl.data import SequenceData
from lares_rl.eval.evaluation import EvalConfig, evaluate_policy
from lares_rl.policies.mostpop import MostPopular

# Items 7 and 8 end every history, so they are every user's validation and test targets: the most
# frequent items overall, and never counted. Items 3 and 5 tie in training (ties go to the lower id).
SEQUENCES = [[1, 2, 3, 7, 8], [2, 3, 5, 1, 7, 8], [2, 4, 5, 7, 8], [6, 2, 1, 7, 8]]
N = 8


def fitted(data: SequenceData) -> MostPopular:
    policy = build_policy(to_plain(OmegaConf.load(str(files("lares_rl.configs") / "policy" / "mostpop.yaml"))), data.num_items, 5)
    policy.fit(data)
    return policy


def expected_order() -> list[int]:
    """Items by training count (the last two items of each history left out), ties by lower id."""
    counts = Counter(item for sequence in SEQUENCES for item in sequence[:-2])
    return sorted(range(1, N + 1), key=lambda item: (-counts[item], item))


def test_ranks_by_training_popularity_only():
    policy = fitted(SequenceData.from_sequences(SEQUENCES, N))
    assert not any(p.requires_grad for p in policy.parameters())
    seq, lengths = torch.tensor([[1, 2, 0], [4, 4, 4]]), torch.tensor([2, 3])
    scores = policy(seq, lengths)
    assert torch.isinf(scores[:, 0]).all()
    assert torch.equal(scores[0], scores[1])  # one list for everyone
    order = scores[0, 1:].argsort(descending=True) + 1
    assert order.tolist() == expected_order() == [2, 1, 3, 5, 4, 6, 7, 8]
    assert sorted(scores[0, 1:].tolist()) == list(range(1, N + 1))  # a strict order, no ties


def test_chunked_scoring_gives_the_same_list():
    policy = fitted(SequenceData.from_sequences(SEQUENCES, N))
    states = policy.encode(torch.zeros(3, 4, dtype=torch.long), torch.tensor([1, 2, 3]))[:, -1]
    _, top, _ = chunked_top_k(states, policy.item_scores, N, 5, chunk=3)
    assert top.tolist() == [expected_order()[:5]] * 3


def test_evaluation_and_checkpoint_round_trip(tmp_path):
    data = SequenceData.from_sequences(SEQUENCES * 3, N)
    policy = fitted(data)
    cfg = EvalConfig(ks=[1, 5, 10])
    valid = evaluate_policy(policy, data, "valid", 5, cfg, torch.device("cpu"))
    # every validation target is item 7, ranked 7th: outside the top 5, inside the top 10
    assert valid["recall@5"] == 0.0 and valid["recall@10"] == 1.0
    path = tmp_path / "spt_best.pt"
    policy_config = {"name": "mostpop", "_target_": "lares_rl.policies.mostpop.MostPopular"}
    save_checkpoint(
        path,
        policy=policy,
        policy_config=policy_config,
        data=data,
        max_len=5,
        dataset_name="tiny",
        phase="spt",
        epoch=0,
        metrics=valid,
        config={},
    )
    restored = policy_from_checkpoint(load_checkpoint(path))
    assert torch.equal(restored.item_table, policy.item_table)
    assert evaluate_policy(restored, data, "test", 5, cfg, torch.device("cpu")) == evaluate_policy(
        policy, data, "test", 5, cfg, torch.device("cpu")
    )
