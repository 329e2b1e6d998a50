"""GumbelCategorical agrees with torch.distributions where they overlap, and rsamples per estimator."""

import pytest
import torch
from scipy import stats
from torch.distributions import OneHotCategorical

from gumbel_rl import ESTIMATORS, GumbelCategorical

LOGITS = torch.tensor([[0.5, -0.3, 1.2, 0.0], [2.0, 0.0, -1.0, 0.5]])


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_log_prob_entropy_mode_equal_one_hot_categorical():
    ours, ref = GumbelCategorical(LOGITS, tau=0.5), OneHotCategorical(logits=LOGITS)
    eye = torch.eye(4).unsqueeze(1).expand(4, 2, 4)
    torch.testing.assert_close(ours.log_prob(eye), ref.log_prob(eye))
    torch.testing.assert_close(ours.entropy(), ref.entropy())
    torch.testing.assert_close(ours.mode, ref.mode)
    torch.testing.assert_close(ours.probs, ref.probs)


def test_sample_frequencies_match_probs():
    n = 100_000
    s = GumbelCategorical(LOGITS, generator=gen(1)).sample((n,))
    assert s.shape == (n, 2, 4) and not s.requires_grad
    for row in range(2):
        counts = s[:, row].sum(0).numpy()
        expected = torch.softmax(LOGITS[row].double(), 0).numpy() * n
        assert stats.chisquare(counts, expected).pvalue > 1e-3


@pytest.mark.parametrize("tau", [0.3, 1.0, 3.0])
def test_relaxed_rsample_has_the_law_of_relaxed_one_hot_categorical(tau):
    n = 30_000
    ours = GumbelCategorical(LOGITS[0], tau=tau, estimator="relaxed", generator=gen(2)).rsample((n,))
    torch.manual_seed(3)
    theirs = GumbelCategorical(LOGITS[0], tau=tau).relaxed.rsample((n,))
    for j in range(4):
        assert stats.ks_2samp(ours[:, j].numpy(), theirs[:, j].numpy()).pvalue > 1e-3


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_rsample_carries_the_estimator_gradient(estimator):
    logits = LOGITS.clone().requires_grad_(True)
    a = GumbelCategorical(logits, tau=0.5, estimator=estimator, generator=gen(4)).rsample((3,))
    assert a.shape == (3, 2, 4)
    assert a.requires_grad == (estimator != "reinforce")


def test_expand_keeps_settings():
    d = GumbelCategorical(LOGITS[0], tau=0.25, estimator="reinmax").expand((5,))
    assert d.batch_shape == (5,) and d.tau == 0.25 and d.estimator == "reinmax"


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown estimator"):
        GumbelCategorical(LOGITS, estimator="nope")
    with pytest.raises(ValueError, match="tau"):
        GumbelCategorical(LOGITS, tau=-1.0)
    with pytest.raises(ValueError, match="NaN"):
        GumbelCategorical(torch.tensor([float("nan"), 0.0]))
