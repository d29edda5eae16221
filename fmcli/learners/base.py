"""What every learner offers to the training loop (fmcli/train.py), and the settled options it
is given.

Python owns the loop (progress, logging, early stop, Ctrl-C); a learner's `step` runs one
compiled epoch or sweep. Learners trust what they are given: the run (fmcli.plan) has checked
every option and rule, sized the model for the data, set its task, link and target range,
and resolved the feature groups.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class TrainOptions:
    """The settings of one training run, resolved before any data is read (fmcli.plan)."""
    task: str = "r"                     # "r" or "c"
    method: str = "mcmc"                # sgd | sgda | als | mcmc
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

    def as_meta(self):
        """The options stored in model files (JSON-safe)."""
        return {"task": self.task, "method": self.method, "dim": list(self.dim),
                "iter": self.iterations, "learn_rate": self.learn_rate,
                "regular": list(self.regular), "init_stdev": self.init_stdev, "seed": self.seed,
                "burn_in": self.burn_in, "keep_samples": self.keep_samples, "optimizer": self.optimizer}
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
        be an object that computes them for the slices the metrics ask for (fmcli.metrics
        goes chunk by chunk), so that no array of the train set's size is made."""
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
