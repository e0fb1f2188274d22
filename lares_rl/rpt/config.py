"""RPT settings (the `rpt` config group): one typed section, checked at start-up."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from lares_rl.core.config import require
from lares_rl.core.errors import LaresError
from lares_rl.eval.adaptive_depth import check_halting
from lares_rl.metrics.beyond import BEYOND_NAMES
from lares_rl.metrics.ranking import METRIC_NAMES

ALGORITHMS = ("grpo", "ppo", "latent_pg", "expected_pg")


EXPLORATIONS = ("latent", "categorical", "plackett_luce", "gaussian")


ADVANTAGES = ("group", "value")


OBJECTIVES = ("reward", "log_reward")


FILTER_ORDERS = ("length", "given")


@dataclass
class RPTConfig:
    """``rpt`` section. Its defaults are the reference objective (GRPO, DESIGN section 3), on
    purpose not the project's default algorithm: ``RPTConfig()`` is what tests, benchmarks and the
    reader of a saved state older than a setting (:func:`lares_rl.rpt.setup.read_rpt_state`) start
    from, and the reference is the fixed point the other algorithms are described against. Which
    algorithm a run uses is a config choice: configs/config.yaml picks ``rpt: expected_pg``, and
    each configs/rpt/<algorithm>.yaml lists only what it changes from these defaults (Hydra composes
    it over this dataclass, registered as ``schema/rpt``), so ``configs/rpt/grpo.yaml`` is empty."""

    algorithm: str = "grpo"  # grpo (reference GroupRelativeLoss) | ppo (TorchRL ClipPPOLoss) | latent_pg (LatentPolicyGradientLoss) | expected_pg (ExpectedRewardLoss)
    group_size: int = 4  # G rollouts per history (expected_pg: 1 is enough, its gradient does not sample)
    objective: str = "reward"  # expected_pg: maximise J = E_pi[r] (reward) or log J (log_reward; with an accuracy reward, cross-entropy on the kept rows)
    histories_per_batch: int = 400  # histories per collected batch (frames = histories x G)
    lr: float = 5e-4
    beta: float = 1.0  # KL-to-reference weight (grpo)
    dropout: float = 0.1  # the policy's dropout during RPT (SPT used policy.dropout)
    slate_size: int = 10  # K, the recommended slate width
    epochs: int = 50  # passes over the kept rows (upper bound; early stopping decides)
    patience: int = 10  # epochs without validation NDCG@10 gain before stopping
    filter_top: int = 100  # keep rows whose target is in the SPT top-`filter_top` ...
    filter_passes: int = 3  # ... in at least one of this many stochastic passes
    filter_order: str = "length"  # length: the filter's batches hold rows of similar history length, each run only over its longest (a third of the positions on Instruments) | given: batches in the rows' order. Each draws its own noise, so keeps other (as many) rows: docs/speed_filter.md
    exploration: str = "latent"  # latent (reference) | categorical | plackett_luce (item sampling) | gaussian (latent_pg)
    latent_sigma: float = 0.1  # gaussian: std of the latent action relative to the state's RMS
    antithetic: bool = False  # gaussian: rollouts in mirrored pairs (eps, -eps) inside each group (needs an even group_size)
    latent_noise: bool = True  # item sampling only: false = deterministic latent (eval mode)
    update_epochs: int = 1  # gradient steps per batch; > 1 uses clipped ratios
    clip_epsilon: float = 0.2  # ppo, and grpo with update_epochs > 1
    advantage: str = "group"  # group (critic-free) | value (ppo: learned value head)
    value_hidden: int = 64  # width of the value head's hidden layer (advantage=value)
    weight_decay: float = 0.0
    batches_per_epoch: int | None = (
        None  # null = one pass over the kept rows; a number makes an "epoch" a validation interval of that many batches
    )
    probe_size: int = 2000  # fixed training histories whose greedy reward, target rank and KL are logged ...
    probe_every: int = 10  # ... every this many batches (with the per-term gradient norms)
    horizon: int = 1  # decisions per episode: 1 = the reference bandit; H > 1 replays H consecutive logged steps of one user
    freeze: list[str] = field(default_factory=list)  # parameter-name prefixes RPT leaves at their SPT values, e.g. [item_embedding]
    collector_workers: int = 1  # processes collecting rollouts (TorchRL MultiSyncCollector); 1 = in the learner's process
    halt_tol: float | None = (
        None  # adaptive depth of the evaluation-mode rollouts (rpt.latent_noise=false): a row stops once its state settles
    )
    halt_k_max: int | None = None  # most steps with halt_tol (null = policy.mean_recurrence)
    select_metric: str = "ndcg@10"  # validation metric that picks the kept epoch, e.g. coverage@10 for a beyond-accuracy reward ...
    select_tolerance: float = 0.0  # ... among epochs whose validation NDCG@10 is within this relative loss of the start's (0.03 = 3%)
    ema_decay: float | None = (
        None  # validate, probe and keep an exponential moving average of the weights (decay per update, e.g. 0.9); null = the raw weights
    )

    def epoch_unit(self, kept_rows: int) -> dict[str, str]:
        """What one RPT "epoch" (the training between two validations) is, in the words the logs,
        the run's table and the summary use: a ``pass`` over the kept rows when
        ``batches_per_epoch`` is null, else an ``interval`` of that many batches of histories."""
        if self.batches_per_epoch is None:
            return {"name": "pass", "plural": "passes over the kept rows", "description": f"pass over the {kept_rows:,} kept rows"}
        histories = self.batches_per_epoch * self.histories_per_batch
        return {
            "name": "interval",
            "plural": f"intervals of {histories:,} histories",
            "description": f"interval of {self.batches_per_epoch} batches x {self.histories_per_batch} histories = {histories:,} histories"
            f" ({histories / max(kept_rows, 1):.2f} of a pass over the {kept_rows:,} kept rows)",
        }

    def validate(self) -> None:
        """Every setting in its range and consistent with the others; the first problem is one LaresError naming the key."""
        self._check_algorithm()
        self._check_budget()
        self._check_update()
        self._check_collection()
        self._check_halting_and_selection()

    def _check_algorithm(self) -> None:
        """The algorithm, its group size and objective, and the exploration it optimises."""
        require(self.algorithm in ALGORITHMS, "rpt.algorithm", f"must be one of {ALGORITHMS}, got {self.algorithm!r}")
        require(
            self.group_size >= 2 or (self.algorithm == "expected_pg" and self.group_size == 1),
            "rpt.group_size",
            f"rpt.group_size must be >= 2 (group advantage undefined), got {self.group_size}; only rpt.algorithm=expected_pg, which samples no group, takes 1",
        )
        require(self.objective in OBJECTIVES, "rpt.objective", f"must be one of {OBJECTIVES}, got {self.objective!r}")
        require(
            self.objective == "reward" or self.algorithm == "expected_pg",
            "rpt.objective",
            f"{self.objective} is read by rpt.algorithm=expected_pg only; drop it or use rpt=expected_pg",
        )
        require(
            self.algorithm != "expected_pg" or self.exploration == "categorical",
            "rpt.exploration",
            f"rpt.algorithm=expected_pg optimises the item softmax that rpt.exploration=categorical samples from; got exploration={self.exploration}. Use rpt=expected_pg",
        )

    def _check_budget(self) -> None:
        """Sizes, rates and budgets: each in its range."""
        require(self.histories_per_batch >= 1, "rpt.histories_per_batch", f"must be >= 1, got {self.histories_per_batch}")
        require(self.lr > 0, "rpt.lr", f"must be > 0, got {self.lr}")
        require(self.beta >= 0, "rpt.beta", f"must be >= 0, got {self.beta}")
        require(0 <= self.dropout < 1, "rpt.dropout", f"must be in [0, 1), got {self.dropout}")
        require(self.slate_size >= 1, "rpt.slate_size", f"must be >= 1, got {self.slate_size}")
        require(self.epochs >= 1 and self.patience >= 1, "rpt.epochs/rpt.patience", "must be >= 1")
        require(self.filter_top >= 1 and self.filter_passes >= 1, "rpt.filter_top/rpt.filter_passes", "must be >= 1")
        require(self.filter_order in FILTER_ORDERS, "rpt.filter_order", f"must be one of {FILTER_ORDERS}, got {self.filter_order!r}")
        require(self.exploration in EXPLORATIONS, "rpt.exploration", f"must be one of {EXPLORATIONS}, got {self.exploration!r}")
        require(
            self.latent_noise or self.exploration != "latent",
            "rpt.latent_noise",
            "false needs item sampling (rpt.exploration=categorical|plackett_luce): with exploration=latent nothing would explore",
        )

    def _check_update(self) -> None:
        """The update's options, and which exploration each algorithm needs."""
        require(self.update_epochs >= 1, "rpt.update_epochs", f"must be >= 1, got {self.update_epochs}")
        require(0 < self.clip_epsilon < 1, "rpt.clip_epsilon", f"must be in (0, 1), got {self.clip_epsilon}")
        require(self.advantage in ADVANTAGES, "rpt.advantage", f"must be one of {ADVANTAGES}, got {self.advantage!r}")
        require(
            self.advantage == "group" or self.algorithm == "ppo", "rpt.advantage", "value needs rpt.algorithm=ppo (grpo is critic-free)"
        )
        require(
            self.algorithm != "ppo" or self.exploration in ("categorical", "plackett_luce"),
            "rpt.exploration",
            "rpt.algorithm=ppo needs a slate distribution: set rpt.exploration=plackett_luce or categorical",
        )
        require(
            (self.algorithm == "latent_pg") == (self.exploration == "gaussian"),
            "rpt.exploration",
            f"rpt.algorithm=latent_pg and rpt.exploration=gaussian go together (the loss needs the Gaussian latent action's log-prob); got algorithm={self.algorithm}, exploration={self.exploration}. Use rpt=latent_pg",
        )
        require(self.latent_sigma > 0, "rpt.latent_sigma", f"must be > 0, got {self.latent_sigma}")
        require(
            not self.antithetic or self.group_size % 2 == 0,
            "rpt.antithetic",
            f"pairs rollouts inside a group, so rpt.group_size must be even, got {self.group_size}",
        )

    def _check_collection(self) -> None:
        """Probing, the value head, episodes and the collector workers."""
        require(self.probe_size >= 1 and self.probe_every >= 1, "rpt.probe_size/rpt.probe_every", "must be >= 1")
        require(self.value_hidden >= 1, "rpt.value_hidden", "must be >= 1")
        require(self.batches_per_epoch is None or self.batches_per_epoch >= 1, "rpt.batches_per_epoch", "must be null or >= 1")
        require(self.horizon >= 1, "rpt.horizon", f"must be >= 1 (decisions per episode), got {self.horizon}")
        require(self.collector_workers >= 1, "rpt.collector_workers", f"must be >= 1, got {self.collector_workers}")
        require(
            self.histories_per_batch % self.collector_workers == 0,
            "rpt.histories_per_batch",
            f"{self.histories_per_batch} must be divisible by rpt.collector_workers={self.collector_workers} (every worker collects an equal share of a batch); use a multiple of {self.collector_workers}",
        )
        require(
            self.horizon == 1 or self.collector_workers == 1,
            "rpt.collector_workers",
            f"worker processes collect one-step episodes only; with rpt.horizon={self.horizon} use rpt.collector_workers=1",
        )

    def _check_halting_and_selection(self) -> None:
        """Halting of rollouts, and which epoch is kept."""
        check_halting(self.halt_tol, self.halt_k_max, "rpt.halt_tol", "rpt.halt_k_max")
        require(
            self.halt_tol is None or not self.latent_noise,
            "rpt.halt_tol",
            "halts evaluation-mode rollouts, and with rpt.latent_noise=true every rollout samples its k (that is its exploration); use rpt=latent_pg or rpt.latent_noise=false",
        )
        name, _, cut = self.select_metric.partition("@")
        require(
            name in METRIC_NAMES + BEYOND_NAMES and cut.isdigit(),
            "rpt.select_metric",
            f"must be <metric>@<K> with a metric among {', '.join(METRIC_NAMES + BEYOND_NAMES)} and K in eval.ks, e.g. coverage@10; got {self.select_metric!r}",
        )
        require(
            0 <= self.select_tolerance < 1,
            "rpt.select_tolerance",
            f"must be in [0, 1) (a relative NDCG@10 loss), got {self.select_tolerance}",
        )
        require(
            self.ema_decay is None or 0 < self.ema_decay < 1,
            "rpt.ema_decay",
            f"must be null (off) or in (0, 1), the weight of the running average per update (0.9 averages about the last 10 updates); got {self.ema_decay}",
        )

    def selection_score(self, metrics: Mapping[str, float], start: Mapping[str, float]) -> float:
        """The number early stopping and the kept epoch follow: ``select_metric`` on validation,
        or -inf when NDCG@10 fell more than ``select_tolerance`` below the start's. With the
        defaults this is NDCG@10 itself; with a beyond-accuracy reward it keeps the epoch with
        the most coverage (say) that still pays at most the accepted accuracy."""
        if self.select_metric not in metrics:
            raise LaresError(f"rpt.select_metric={self.select_metric!r} is not a validation metric; choose one of {sorted(metrics)}")
        if metrics["ndcg@10"] < (1.0 - self.select_tolerance) * start["ndcg@10"]:
            return float("-inf")
        return float(metrics[self.select_metric])

    def fitted_values(self, *, num_items: int, recurrent: bool, explicit: Collection[str]) -> dict[str, tuple[object, str]]:
        """The values a config file chose for the common case that cannot apply to this catalog or
        policy, each as {field: (value RPT uses instead, why)}: a slate wider than the catalog
        (rpt=latent_pg's 100 on a small one) becomes the catalog, and latent exploration, which
        varies the reasoning depth, becomes slate sampling for a policy without a reasoning core
        (SASRec). A dotted key in ``explicit`` (set on the command line) is never changed:
        :meth:`check_fits` refuses it instead, naming the fix."""
        changes: dict[str, tuple[object, str]] = {}
        if self.slate_size > num_items and "rpt.slate_size" not in explicit:
            changes["slate_size"] = (
                num_items,
                f"wider than the catalog ({num_items} items), so RPT uses slates of {num_items} (reward.k follows)",
            )
        if not recurrent and self.exploration == "latent" and "rpt.exploration" not in explicit:
            changes["exploration"] = (
                "plackett_luce",
                "this policy has no reasoning core, so latent exploration cannot vary anything: RPT samples slates instead",
            )
        return changes

    def check_compatible(self, *, num_items: int, reward_fn, recurrent: bool) -> None:
        """Checks that need the data, the policy and the built reward; all run before any training."""
        self.check_fits(num_items=num_items, recurrent=recurrent)
        self.check_reward_k(getattr(reward_fn, "keywords", {}).get("k"), num_items)

    def check_reward_k(self, reward_k: int | None, num_items: int) -> None:
        """The reward's cut-off ``reward.k`` (None: it takes none) against the catalog and the slate."""
        if reward_k is not None and reward_k > num_items:
            raise LaresError(f"reward.k: {reward_k} is larger than the catalog ({num_items} items); lower reward.k")
        if reward_k is not None and reward_k > self.slate_size:
            print(
                f"[rpt] warning: reward.k={reward_k} > rpt.slate_size={self.slate_size}; the reward sees the whole slate of {self.slate_size}"
            )

    def check_fits(self, *, num_items: int, recurrent: bool) -> None:
        """Checks that need the catalog size and whether the policy has a reasoning core."""
        require(
            self.slate_size <= num_items,
            "rpt.slate_size",
            f"{self.slate_size} is larger than the catalog ({num_items} items); lower rpt.slate_size",
        )
        require(
            recurrent or self.halt_tol is None,
            "rpt.halt_tol",
            f"{self.halt_tol} needs a policy with a reasoning core; this one (e.g. SASRec) has no steps to halt, leave rpt.halt_tol unset",
        )
        require(
            recurrent or self.exploration != "latent",
            "rpt.exploration",
            "latent exploration needs a recurrent LARES policy (this policy has no core block, e.g. SASRec); use rpt.exploration=plackett_luce or categorical",
        )
