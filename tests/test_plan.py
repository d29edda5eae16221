"""The run resolved before any data is read (fmcli.plan): the settled options and every rule on
the options, each checked once."""

import numpy as np
import pytest

from fmcli.errors import UsageError
from fmcli.learners.base import TrainOptions
from fmcli.plan import TrainJob, feature_id_limit, model_groups, resolve


def job(**kw):
    opts = kw.pop("opts", {})
    return TrainJob(opts=TrainOptions(**opts), train=kw.pop("train", "unused.libfm"), **kw)


def test_a_loaded_model_settles_dim_and_the_feature_limit_before_data(tmp_path):
    from fmcli.io.modelfile import save_model
    from fmcli.model import FMModel

    save_model(tmp_path / "m.fm", FMModel.init(5, 64, rng=np.random.default_rng(0)))
    plan = resolve(job(load_model=str(tmp_path / "m.fm"), dim_given=False, opts=dict(method="sgd")))
    assert plan.opts.dim == (1, 1, 64) and plan.opts.warm_start and plan.loaded.k == 64
    # the memory limit of the model that will be trained, not of the default -dim
    assert plan.feature_limit == feature_id_limit(64) < feature_id_limit(8)
    with pytest.raises(UsageError, match="does not match the loaded model's 1,1,64"):
        resolve(job(load_model=str(tmp_path / "m.fm"), opts=dict(dim=(1, 1, 8))))


def test_settled_options():
    plan = resolve(job(opts=dict(method="mcmc", regular=(2.0,))))
    assert plan.opts.regular == (2.0, 2.0, 2.0) and not plan.opts.warm_start
    assert not plan.opts.save_samples       # nothing will be written
    assert resolve(job(save_model="m.fm")).opts.save_samples
    with pytest.raises(Exception):
        plan.opts.dim = (1, 1, 4)           # frozen


@pytest.mark.parametrize("kw,message", [
    (dict(opts=dict(method="als", optimizer="adam")), "applies to -method sgd and bpr only"),
    (dict(opts=dict(method="sgda")), "sgda needs -validation"),
    (dict(early_stop=3), "--early-stop needs -validation"),
    (dict(out="o.txt"), "-out needs -test"),
    (dict(relations=("r",), opts=dict(method="sgd")), "relations are not supported with SGD"),
    (dict(opts=dict(regular=(0, 1))), "-regular takes 1 or 3 values"),
    (dict(opts=dict(method="mcmc", regular=(0, 1, 1, 1, 1))), "-regular takes 1 or 3 values"),
    (dict(opts=dict(method="als", regular=(0, 1, 1, 1, 1))), "-regular takes 1 or 3 values"),   # no -meta
    (dict(rlog="-"), "-rlog needs a file name"),
    (dict(opts=dict(method="bogus")), "unknown method"),
])
def test_option_rules(kw, message):
    with pytest.raises(UsageError, match=message):
        resolve(job(**kw))


def test_groups_and_the_als_per_group_count():
    from fmcli.data import SparseData
    from fmcli.plan import check_regular_count

    d = SparseData(np.array([0, 1], np.int64), np.array([2], np.int32), np.ones(1, np.float32),
                   np.ones(1, np.float32), 3)
    assert model_groups(None, d, 4).tolist() == [0, 0, 0, 0]
    groups = model_groups(np.array([0, 1, 1, 2, 0]), d, 4)
    assert groups.tolist() == [0, 1, 1, 2] and groups.dtype == np.int64
    with pytest.raises(UsageError, match="-meta gives 2 group ids but the data have 4 features"):
        model_groups(np.array([0, 1]), d, 4)
    check_regular_count(TrainOptions(method="als", regular=(0, 1, 1, 1, 2, 2, 2)), groups)
    with pytest.raises(UsageError, match="1\\+2G = 7 values"):
        check_regular_count(TrainOptions(method="als", regular=(0, 1, 1, 2, 2)), groups)
