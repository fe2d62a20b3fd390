"""local_text builder: split rule, documents, array_record build, bad input."""
import os

import pytest

from ssa.data import DataError
from ssa.data import local_text


def _corpus(root, n=12, words=40):
  os.makedirs(root, exist_ok=True)
  for i in range(n):
    with open(os.path.join(root, f'doc{i:02d}.txt'), 'w') as f:
      f.write(' '.join(f'w{i}_{j}.' for j in range(words)) + '\n')
  return root


def test_split_rule_deterministic_disjoint_and_stable():
  keys = [f'k{i}' for i in range(2000)]
  s1 = local_text.assign_splits(keys, 0.1, 0.05)
  s2 = local_text.assign_splits(list(keys), 0.1, 0.05)
  assert s1 == s2
  all_idx = sorted(s1['train'] + s1['validation'] + s1['test'])
  assert all_idx == list(range(2000))
  assert abs(len(s1['validation']) / 2000 - 0.1) < 0.03
  assert abs(len(s1['test']) / 2000 - 0.05) < 0.02
  # the rule is per key: adding documents never moves the existing ones
  more = local_text.assign_splits(keys + [f'new{i}' for i in range(100)], 0.1, 0.05)
  for name in s1:
    assert set(s1[name]) <= set(more[name])
  for i in s1['validation']:
    assert local_text.doc_uniform(keys[i]) >= 0.05 and local_text.doc_uniform(keys[i]) < 0.15


def test_split_rule_small_corpus_fallback_and_errors():
  s = local_text.assign_splits(['a', 'b'], 0.1)
  assert len(s['validation']) == 1 and len(s['train']) == 1 and 'test' not in s
  with pytest.raises(DataError, match='train'):
    local_text.assign_splits(['a'], 0.99, 0.0)
  with pytest.raises(DataError, match='validation_fraction'):
    local_text.assign_splits(['a'], 1.5)


def test_documents_units_and_replacement(tmp_path):
  (tmp_path / 'd').mkdir()
  (tmp_path / 'd' / 'a.txt').write_bytes(b'\xef\xbb\xbfPara one.\r\nStill one.\r\n\r\n\r\nPara two \xff end.\n')
  (tmp_path / 'd' / 'skip.md').write_text('not matched')
  docs = local_text.read_documents([str(tmp_path / 'd')], '*.txt', 'file')
  assert [d.key for d in docs] == ['d/a.txt#0']
  assert docs[0].text == 'Para one.\nStill one.\n\n\nPara two \ufffd end.'
  paras = local_text.read_documents([str(tmp_path / 'd')], '*.txt', 'paragraph')
  assert [p.text for p in paras] == ['Para one.\nStill one.', 'Para two \ufffd end.']
  lines = local_text.read_documents([str(tmp_path / 'd' / 'a.txt')], '*.txt', 'line')
  assert [(l.key, l.text) for l in lines][0] == ('a.txt#0', 'Para one.')
  assert len(lines) == 3


def test_bad_inputs(tmp_path):
  with pytest.raises(DataError, match='does not exist'):
    local_text.read_documents([str(tmp_path / 'missing')])
  (tmp_path / 'e').mkdir()
  with pytest.raises(DataError, match='no file matching'):
    local_text.read_documents([str(tmp_path / 'e')])
  (tmp_path / 'e' / 'blank.txt').write_text('  \n\n \t\n')
  with pytest.raises(DataError, match='empty corpus'):
    local_text.read_documents([str(tmp_path / 'e')])
  with pytest.raises(DataError, match='doc_unit'):
    local_text.read_documents([str(tmp_path / 'e')], doc_unit='chapter')


def test_build_array_record_splits(tmp_path):
  root = _corpus(str(tmp_path / 'corpus'), n=20)
  cfg = local_text.make_config([root], validation_fraction=0.2, test_fraction=0.1)
  builder = local_text.build(cfg, str(tmp_path / 'tfds'))
  docs = local_text.read_documents([root])
  want = local_text.assign_splits([d.key for d in docs], 0.2, 0.1)
  files = os.listdir(builder.data_dir)
  assert any(f.endswith('array_record-00000-of-00001') for f in files)
  for split, idx in want.items():
    src = builder.as_data_source(split=split)
    got = sorted((src[i]['key'].decode(), src[i]['text'].decode()) for i in range(len(src)))
    assert got == sorted((docs[i].key, docs[i].text) for i in idx)
  # same files -> same config name (reuse); an edited file -> a new build
  assert local_text.make_config([root], validation_fraction=0.2, test_fraction=0.1).name == cfg.name
  with open(os.path.join(root, 'doc00.txt'), 'a') as f:
    f.write('more text\n')
  assert local_text.make_config([root], validation_fraction=0.2, test_fraction=0.1).name != cfg.name
