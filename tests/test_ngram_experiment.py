"""ssa/experiments/ngram.py: baselines of a config's own splits, equal to ssa.measure on them."""

from configs import tiny
from ssa import measure
from ssa.data import get_tokenizer
from ssa.evaluation.common import dataset_texts
from ssa.experiments import ngram


def test_baselines_of_a_local_corpus(tmp_path):
  text = tmp_path / 'corpus.txt'
  lines = [f'line {i}: to be, or not to be, that is question {i % 7}.' for i in range(300)]
  text.write_text('\n'.join(lines) + '\n')
  c = tiny.get_config()
  c.data.dataset = str(text)
  c.data.data_dir = str(tmp_path / 'cache')
  c.data.doc_unit = 'line'
  c.data.tokenizer = 'byte'
  out = ngram.baselines(c, log=lambda *_: None)
  tok = get_tokenizer('byte')
  train = [tok.encode(t) for t in dataset_texts(c, c.data.train_split)]
  ev = [tok.encode(t) for t in dataset_texts(c, c.data.eval_split)]
  assert out['train_tokens'] == sum(map(len, train)) > out['eval_tokens'] == sum(map(len, ev)) > 0
  assert out['baselines'] == measure.ngram_baselines(train, ev, tok.vocab_size)
  b = out['baselines']
  assert b['unigram']['nll'] > b['bigram']['nll'] > b['trigram']['nll'] > 0   # repetitive text
