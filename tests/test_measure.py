"""The measurement standard (ssa/measure.py): each statistic on a case with a known answer."""

import math

import numpy as np
import pytest

from ssa import measure


def test_mde_is_z_sum_times_se():
  assert measure.minimum_detectable_effect(1.0) == pytest.approx(1.959964 + 0.841621, abs=1e-5)
  assert measure.minimum_detectable_effect(0.01, alpha=0.01, power=0.9) == pytest.approx(
      0.01 * (2.575829 + 1.281552), abs=1e-7)
  with pytest.raises(ValueError, match='alpha'):
    measure.minimum_detectable_effect(0.1, alpha=1.5)


def test_constant_paired_shift_has_a_zero_width_interval():
  rng = np.random.default_rng(0)
  tokens = rng.integers(10, 100, 50).astype(float)
  b = rng.normal(3.0, 0.5, 50) * tokens
  a = b + 0.02 * tokens                       # every token 0.02 nats worse
  d = measure.paired_difference(a, b, tokens, num_bootstrap=200)
  assert d['mean'] == pytest.approx(0.02)
  assert d['ci95'] == pytest.approx([0.02, 0.02])
  assert d['se'] == pytest.approx(0.0, abs=1e-12)
  assert d['excludes_zero'] and d['tokens'] == tokens.sum() and d['sequences'] == 50
  assert d['a'] - d['b'] == pytest.approx(0.02)


def test_bootstrap_se_matches_the_analytic_standard_error():
  rng = np.random.default_rng(1)
  n, sigma = 4000, 0.3
  diff = rng.normal(0.05, sigma, n)
  d = measure.paired_difference(diff, np.zeros(n), num_bootstrap=1000, seed=3)
  se = sigma / math.sqrt(n)
  assert d['mean'] == pytest.approx(diff.mean())
  assert d['se'] == pytest.approx(se, rel=0.1)
  lo, hi = d['ci95']
  assert lo == pytest.approx(d['mean'] - 1.96 * se, abs=0.15 * se * 1.96)
  assert hi == pytest.approx(d['mean'] + 1.96 * se, abs=0.15 * se * 1.96)
  assert d['mde'] == pytest.approx(2.8016 * d['se'], rel=1e-3)


def test_interval_covers_the_truth_about_95_percent_of_the_time():
  rng = np.random.default_rng(2)
  hits = 0
  for rep in range(200):
    diff = rng.normal(0.1, 1.0, 200)
    lo, hi = measure.paired_difference(diff, np.zeros(200), num_bootstrap=300, seed=rep)['ci95']
    hits += lo <= 0.1 <= hi
  assert 0.89 <= hits / 200 <= 0.99


def test_seeds_are_resampled_too():
  # Two seeds whose differences disagree by a constant: the seed-to-seed spread must widen the
  # interval beyond the one-seed (sequence-only) interval.
  rng = np.random.default_rng(4)
  base = rng.normal(0.0, 0.05, 300)
  a = np.stack([base + 0.1, base - 0.1])
  d2 = measure.paired_difference(a, np.zeros_like(a), num_bootstrap=500)
  d1 = measure.paired_difference(a[0], np.zeros(300), num_bootstrap=500)
  assert d2['seeds'] == 2 and d1['seeds'] == 1
  assert d2['se'] > 5 * d1['se']
  assert d2['mean'] == pytest.approx(base.mean())


def test_unpaired_or_bad_input_raises():
  with pytest.raises(ValueError, match='not paired'):
    measure.paired_difference(np.zeros(5), np.zeros(6))
  with pytest.raises(ValueError, match='non-finite'):
    measure.paired_difference(np.array([1.0, np.nan]), np.zeros(2))
  with pytest.raises(ValueError, match='non-empty'):
    measure.paired_difference(np.zeros(0), np.zeros(0))


def test_describe_says_null_when_the_interval_contains_zero():
  d = measure.paired_difference(np.array([1.0, -1.0, 0.5, -0.5]), np.zeros(4), num_bootstrap=200)
  assert 'null' in measure.describe(d)


@pytest.mark.parametrize('T, want', [
    (1, [(1, 1)]), (32, [(1, 32)]), (100, [(1, 32), (33, 100)]),
    (512, [(1, 32), (33, 128), (129, 256), (257, 512)]),
    (600, [(1, 32), (33, 128), (129, 256), (257, 512), (513, 600)]),
    (2048, [(1, 32), (33, 128), (129, 256), (257, 512), (513, 1024), (1025, 2048)])])
def test_position_buckets(T, want):
  assert measure.position_buckets(T) == want


def test_bucket_sums_and_losses():
  pos = np.array([[1, 2, 32, 33, 128, 129]])
  nll = np.array([[1.0, 3.0, 2.0, 4.0, 6.0, 5.0]])
  w = np.array([[1, 1, 1, 1, 1, 0]])          # the last token is padding
  sums, counts = measure.bucket_sums(nll, w, pos, 256)
  assert sums.tolist() == [6.0, 10.0, 0.0] and counts.tolist() == [3.0, 2.0, 0.0]
  got = measure.bucket_losses(sums, counts, 256)
  assert got == {'1-32': {'loss': 2.0, 'tokens': 3.0}, '33-128': {'loss': 5.0, 'tokens': 2.0},
                 '129-256': {'loss': None, 'tokens': 0.0}}


def test_ngram_baselines_hand_computed():
  # train 0 1 0 1 (V=2, add-1): p(0) = p(1) = 3/6; p(1 | 0) = (2+1)/(2+2); p(0 | 0 1) = (1+1)/(1+2).
  out = measure.ngram_baselines([[0, 1, 0, 1]], [[0, 1, 0]], vocab_size=2, k=1.0)
  assert out['unigram']['nll'] == pytest.approx(math.log(2))
  p_bigram_0_after_1 = (1 + 1) / (1 + 2)     # pairs (0,1) x2, (1,0) x1; c(h=1) = 1
  assert out['bigram']['nll'] == pytest.approx(
      -(math.log(0.5) + math.log(0.75) + math.log(p_bigram_0_after_1)) / 3)
  assert out['trigram']['nll'] == pytest.approx(
      -(math.log(0.5) + math.log(0.75) + math.log(2 / 3)) / 3)
  assert out['trigram']['tokens'] == 3


def test_ngram_baselines_limits_and_tuned_k():
  rng = np.random.default_rng(0)
  V = 8
  uniform = [rng.integers(0, V, 500) for _ in range(40)]
  out = measure.ngram_baselines(uniform[:30], uniform[30:], V)
  assert out['unigram']['nll'] == pytest.approx(math.log(V), abs=0.02)
  assert out['unigram']['k'] in measure.K_GRID
  cycle = [np.arange(400) % V for _ in range(20)]   # deterministic: bigram / trigram ~ 0 nats
  out = measure.ngram_baselines(cycle[:15], cycle[15:], V)
  assert out['unigram']['nll'] == pytest.approx(math.log(V), abs=1e-3)
  assert out['bigram']['nll'] < 0.02 and out['trigram']['nll'] < 0.02
  assert out['bigram']['k'] == min(measure.K_GRID)
  assert measure.where_it_sits(0.001, out).startswith('below')
  assert measure.where_it_sits(1.0, out).startswith('between unigram')
  assert 'above unigram' in measure.where_it_sits(5.0, out)
  with pytest.raises(ValueError, match='outside'):
    measure.ngram_baselines([[0, 9]], [[0]], vocab_size=4, k=1.0)
