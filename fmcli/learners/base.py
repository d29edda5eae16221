"""What every learner offers to the training loop (fmcli/train.py), and the settled options it
is given.

Python owns the loop (progress, logging, early stop, Ctrl-C); a learner's `step` runs one
compiled epoch or sweep. Learners trust what they are given: the run (fmcli.plan) has checked
every option and rule, sized the model for the data, set its task, link and target range,
and resolved the feature groups.
"""

import math
from dataclasses import dataclass

from fmcli.errors import TrainingError

# A step that leaves the raw train predictions off by more than this many times the targets'
# size (1 + max |y|) has diverged: their links clip them to the target range or to 0 and 1,
# where they would sit unnoticed (AdaGrad or Adam with a huge -learn_rate keep every
# parameter finite). Normal runs stay within a few target sizes.
DIVERGED_ERROR = 1e6


@dataclass(frozen=True)
class TrainOptions:
    """The settings of one training run, resolved before any data is read (fmcli.plan)."""
    task: str = "r"                     # "r" or "c"
    method: str = "mcmc"                # sgd | sgda | als | mcmc | bpr
    dim: tuple = (1, 1, 8)              # k0 (use w0), k1 (use w), k2 (factors)
    iterations: int = 100
    learn_rate: object = 0.01           # SGD: one rate, or (w0, w, V) rates
    regular: tuple = (0.0, 0.0, 0.0)    # r0, r1, r2 (ALS: or r0, λw per group, λv per group)
    init_stdev: float = 0.1
    seed: int = 0
    burn_in: int = 0                    # MCMC: samples not averaged
    keep_samples: int = 1               # MCMC: keep every n-th averaged sample in the saved model
    save_samples: bool = True           # MCMC: keep those samples at all (off: nothing will be saved)
    threads: int = 0                    # compiled kernels' threads (0: all cores)
    optimizer: str = "sgd"              # SGD step rule: sgd | adagrad | adam
    warm_start: bool = False            # the model was loaded (-load_model): keep its parameters
    mapping: str = None                 # BPR: the convert mapping that gives the user and item sides
    sampling: str = "uniform"           # BPR: negatives uniform | warp
    negatives: int = 1                  # BPR (uniform): negatives (steps) per positive
    max_sampled: int = 100              # BPR (warp): draws per positive at most

    def as_meta(self):
        """The options stored in model files (JSON-safe)."""
        return {"task": self.task, "method": self.method, "dim": list(self.dim),
                "iter": self.iterations, "learn_rate": self.learn_rate,
                "regular": list(self.regular), "init_stdev": self.init_stdev, "seed": self.seed,
                "burn_in": self.burn_in, "keep_samples": self.keep_samples, "optimizer": self.optimizer,
                **({"sampling": self.sampling, "negatives": self.negatives, "max_sampled": self.max_sampled}
                   if self.method == "bpr" else {})}
        # threads are left out on purpose: results do not depend on them


class Learner:
    """Interface: construct, then call step(it) for it = 0..iterations-1."""

    def __init__(self, model, train, evals, groups, opts, rng):
        """model: FMModel to train in place (random init or warm start), with room for every
        feature of train and evals; train: SparseData with targets (classification targets in
        {-1, +1}); evals: {name: SparseData} whose predictions are reported each iteration
        ("test", "validation"); groups: int64 group id of every model feature; opts:
        TrainOptions; rng: numpy Generator seeded from opts.seed."""
        raise NotImplementedError

    def step(self, it):
        """One epoch (SGD) or sweep (ALS, MCMC)."""
        raise NotImplementedError

    def train_scores(self):
        """(predictions, targets) of the train rows in any matching order, for the train
        metrics: learners that keep their rows reordered return them in their own order, which
        spares a copy of the train set's predictions in the file's order. The predictions may
        be an object with len() that computes the metrics' sums itself (regression: its
        difference_sums(y), fmcli.metrics.regression_sums), so that no array of the train set's
        size is made."""
        raise NotImplementedError

    def eval_predictions(self, name):
        """Link-applied predictions of evals[name] as `-out` would write them now
        (MCMC: the average over the samples so far)."""
        raise NotImplementedError

    def final_model(self):
        """The FMModel to save (MCMC: carries its samples)."""
        raise NotImplementedError

    def log_values(self):
        """Extra per-iteration values for -rlog (e.g. alpha and hyperparameters), name -> float."""
        return {}

    def rejected_draws(self):
        """Non-finite draws or updates rejected so far (ALS/MCMC), by parameter kind."""
        return {}


def target_size(task, y):
    """1 + max |y| of the train targets (classification: ±1): the scale of DIVERGED_ERROR."""
    if task == "c" or not len(y):
        return 2.0
    return 1.0 + max(abs(float(y.min())), abs(float(y.max())))


def check_diverged(what, it, sq_error, n_rows, size, model_finite, advice):
    """The divergence rule of every learner, after each step: the RMS of the raw train errors
    (ŷ − y, or the logit's distance from ±1; sq_error = their sum of squares) must be finite
    and within DIVERGED_ERROR target sizes, and every parameter finite (model_finite).
    Raises TrainingError (exit 1) naming the learner, the iteration, and what to change."""
    rms = math.sqrt(sq_error / n_rows) if n_rows else 0.0
    if model_finite and math.isfinite(rms) and rms <= DIVERGED_ERROR * size:
        return
    cause = ("NaN or inf in the model" if not model_finite else
             "the train predictions are NaN or inf" if not math.isfinite(rms) else
             f"the train predictions are off by {rms:.3g} (RMS) for targets of size {size - 1:g}")
    raise TrainingError(f"{what} diverged in iteration {it}: {cause}; try {advice}")
