"""What every learner offers to the training loop (fmcli/train.py).

Python owns the loop (progress, logging, early stop, Ctrl-C); a learner's
`step` runs one compiled epoch or sweep.
"""

from dataclasses import dataclass, field

import numpy as np


@dataclass
class TrainOptions:
    task: str = "r"                     # "r" or "c"
    method: str = "mcmc"                # sgd | als | mcmc
    dim: tuple = (1, 1, 8)              # k0 (use w0), k1 (use w), k2 (factors)
    iterations: int = 100
    learn_rate: float = 0.01            # SGD
    regular: tuple = (0.0, 0.0, 0.0)    # r0, r1, r2 (ALS may give 1 + 2G values)
    init_stdev: float = 0.1
    seed: int = 0
    groups: np.ndarray = None           # feature -> group (from -meta), or None for one group
    burn_in: int = 0                    # MCMC: samples not averaged
    keep_samples: int = 1               # MCMC: keep every n-th averaged sample in the saved model
    save_samples: bool = True           # MCMC: keep those samples at all (off: nothing will be saved)
    threads: int = 0                    # compiled kernels' threads (0: all cores)
    optimizer: str = "sgd"              # SGD step rule: sgd | adagrad | adam
    extra: dict = field(default_factory=dict)

    def as_meta(self):
        """The options stored in model files (JSON-safe)."""
        return {"task": self.task, "method": self.method, "dim": list(self.dim),
                "iter": self.iterations, "learn_rate": self.learn_rate,
                "regular": list(self.regular), "init_stdev": self.init_stdev, "seed": self.seed,
                "burn_in": self.burn_in, "keep_samples": self.keep_samples, "optimizer": self.optimizer}
        # threads are left out on purpose: results do not depend on them


class Learner:
    """Interface: construct, then call step(it) for it = 0..iterations-1."""

    def __init__(self, model, train, evals, opts, rng):
        """model: FMModel to train in place (random init or warm start);
        train: SparseData with targets (classification targets already in {-1, +1});
        evals: {name: SparseData} whose predictions are reported each iteration (e.g. "test");
        opts: TrainOptions; rng: numpy Generator seeded from opts.seed."""
        raise NotImplementedError

    def step(self, it):
        """One epoch (SGD) or sweep (ALS, MCMC)."""
        raise NotImplementedError

    def train_predictions(self):
        """Link-applied predictions of the train rows for the current parameters."""
        raise NotImplementedError

    def train_scores(self):
        """(predictions, targets) of the train rows in any matching order, for the train
        metrics: learners that keep their rows reordered return them in their own order, which
        spares a copy of the train set's predictions in the user's order. The predictions may
        be an object that computes them for the slices the metrics ask for (fmcli.metrics
        goes chunk by chunk), so that no array of the train set's size is made."""
        return self.train_predictions(), self.train.y

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
