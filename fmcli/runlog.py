"""The per-iteration reports of a training run: libFM's `#Iter=` line, the -rlog table and the
--log-json lines."""

from fmcli.io.atomic import atomic_output


def iteration_line(it, task, train_m, test_m):
    """libFM's per-iteration line, with fmcli's extra classification fields appended."""
    key = "rmse" if task == "r" else "accuracy"
    line = f"#Iter={it:3d}\tTrain={train_m[key]:.6g}"
    if test_m:
        line += f"\tTest={test_m[key]:.6g}"
        if task == "c":
            line += (f"\tTest(ll)={test_m['ll10']:.6g}\tTest(auc)={test_m['auc']:.6g}"
                     f"\tTest(logloss)={test_m['logloss']:.6g}")
    return line


class RunLog:
    """-rlog (a header line and tab-separated rows) and --log-json (one JSON object per line).

    -rlog keeps libFM's columns, in libFM's order (libfm-behaviour: `-rlog`), so scripts
    that read libFM's table by name or position keep working; fmcli's own columns follow:

    - SGD, r: rmse mae time_pred time_learn time_learn2 time_learn4 rmse_train
    - SGD, c: accuracy time_pred time_learn time_learn2 time_learn4 rmse_train
      (as in libFM, rmse_train holds the train accuracy for classification)
    - ALS/MCMC: rmse mae (r) or accuracy (c), time_pred time_learn time_learn2
      time_learn4 alpha, then rmse_mcmc_this rmse_mcmc_all rmse_mcmc_all_but5 (r) or
      acc_mcmc_this acc_mcmc_all acc_mcmc_all_but5 ll_mcmc_this ll_mcmc_all
      ll_mcmc_all_but5 (c), then wmu[g] wlambda[g] and vmu[g,f] vlambda[g,f] per group
    - then fmcli's: mae_train (r) or auc logloss ll auc_train logloss_train (c), and elapsed.

    rmse/mae/accuracy (and the *_mcmc_all columns) are the printed Test values (nan
    without labelled test rows); time_learn is the wall-clock seconds of the iteration's
    learning step; elapsed the seconds since training started. Columns fmcli does not
    measure (time_pred, time_learn2, time_learn4, *_this, *_but5) are nan, as libFM
    writes unset fields. Each file is replaced whole after every iteration, so it can be
    watched during a long run and is never half-written.
    """

    def __init__(self, rlog_path, json_path, task, method):
        self.rlog_path, self.json_path = rlog_path, json_path
        self.task, self.coordinate = task, method in ("als", "mcmc")
        self.header, self.rows, self.records = None, [], []

    def columns(self, train_m, test_m, val_m, t_learn, elapsed, hyper):
        """Ordered name -> value of one -rlog row (libFM's columns first)."""
        nan = float("nan")
        it_task = self.task
        test = test_m or {}
        row = {}
        if it_task == "r":
            row["rmse"], row["mae"] = test.get("rmse", nan), test.get("mae", nan)
        else:
            row["accuracy"] = test.get("accuracy", nan)
        row.update(time_pred=nan, time_learn=t_learn, time_learn2=nan, time_learn4=nan)
        if self.coordinate:
            row["alpha"] = hyper.get("alpha", nan)
            if it_task == "r":
                row.update(rmse_mcmc_this=nan, rmse_mcmc_all=row["rmse"], rmse_mcmc_all_but5=nan)
            else:
                row.update(acc_mcmc_this=nan, acc_mcmc_all=row["accuracy"], acc_mcmc_all_but5=nan,
                           ll_mcmc_this=nan, ll_mcmc_all=test.get("ll10", nan), ll_mcmc_all_but5=nan)
            row.update((k, v) for k, v in hyper.items() if k != "alpha")
        # libFM's SGD table ends with rmse_train; for ALS/MCMC it is one of fmcli's columns
        row["rmse_train"] = train_m["rmse"] if it_task == "r" else train_m["accuracy"]
        if val_m is not None:  # libFM's SGDA column, then its regw/regv (in hyper)
            row["rmse_val"] = val_m["rmse"] if it_task == "r" else val_m["accuracy"]
        if not self.coordinate:
            row.update(hyper)
        if it_task == "r":
            row["mae_train"] = train_m["mae"]
        else:
            row.update(auc=test.get("auc", nan), logloss=test.get("logloss", nan))
            if not self.coordinate:
                row["ll"] = test.get("ll10", nan)
            row.update(auc_train=train_m.get("auc", nan), logloss_train=train_m.get("logloss", nan))
        row["elapsed"] = elapsed
        return row

    def add(self, it, elapsed, train_m, test_m, val_m, t_learn, hyper):
        row = self.columns(train_m, test_m, val_m, t_learn, elapsed, hyper)
        if self.header is None:
            self.header = list(row)
        self.rows.append("\t".join("%.6g" % row.get(h, float("nan")) for h in self.header))
        if self.rlog_path:
            self._replace(self.rlog_path, "\t".join(self.header) + "\n" + "\n".join(self.rows) + "\n")
        if self.json_path:
            import json

            record = {"iteration": it, "elapsed": round(elapsed, 6), "time_learn": round(t_learn, 6),
                      "train": train_m, "test": test_m, "validation": val_m, "hyper": hyper}
            self.records.append(json.dumps(record, default=_json_number))
            self._replace(self.json_path, "\n".join(self.records) + "\n")

    @staticmethod
    def _replace(path, text):
        with atomic_output(path) as f:
            f.write(text)


def _json_number(x):
    return float(x)
