"""`local_text`: a tfds builder turning any set of text files/folders into array_record splits.

Documents
  Each path in `paths` is a file or a folder; folders are searched recursively for files whose
  name matches `file_pattern` (fnmatch, default '*.txt'), in sorted order. A missing path, or a
  folder with no matching file, raises DataError naming it. Files are read as UTF-8 (a leading BOM
  is dropped, CRLF/CR become LF); a few byte sequences that are not valid UTF-8 are REPLACED by
  U+FFFD (documented replacement). A file is cut into documents by `doc_unit`:
    'file'       the whole file is one document (default; the Shakespeare corpus: one play each),
    'paragraph'  blocks separated by one or more blank lines,
    'line'       every line.
  Leading/trailing whitespace of a document is stripped; empty documents are dropped. If nothing
  is left, DataError('... empty corpus ...').

Text rule (binary input is refused, TEXT_RULE below)
  A file counts as text iff
    (1) it holds no NUL byte (0x00): binary formats (images, archives, arrays) and UTF-16/32 text
        nearly always do, UTF-8 text never does; and
    (2) at most max(MAX_INVALID_BYTES, MAX_INVALID_FRACTION * size) = max(8, 20%) of its bytes
        are not valid UTF-8 (counted byte by byte). Stray bytes, a cut multi-byte character or a
        Latin-1/cp1252 file (~2-5% invalid) still pass and are replaced as above; NUL-free random
        or compressed bytes (~44% invalid) and legacy CJK encodings (mostly invalid) do not.
  (1) is the rule git and grep use for "binary" and catches nearly every binary format; (2) catches
  NUL-free junk. The 20% bound keeps the documented replacement of undecodable bytes in text.
  Any file breaking the rule makes the build raise DataError listing the first few such files
  (with why: 'holds NUL bytes' or 'N of M bytes are not valid UTF-8') and their count; nothing is
  trained on. The rule is checked when the corpus is built; its version is part of the build
  fingerprint (see Storage), so a build cached before the rule existed is not reused unchecked.
  Each document has a key '<root>/<relative path>#<index in file>' where <root> is the basename of
  the path it was found under (a file given directly has relative path = its own name).

Split rule (deterministic, per document, so no sentence is ever shared between splits)
  u(doc) = first 64 bits of SHA-256(key) / 2**64, uniform in [0, 1).
    u < test_fraction                                  -> 'test'
    test_fraction <= u < test_fraction + val_fraction  -> 'validation'
    otherwise                                          -> 'train'
  A split whose fraction is > 0 but that received no document takes the train document with the
  smallest u (validation first, then test). Train must keep at least one document, otherwise
  DataError. The rule depends only on the keys, so adding files never moves existing documents
  (except through the empty-split fallback). The 'validation' / 'test' split exists only if its fraction is > 0.

Storage
  The builder writes tfds array_record files under <data_dir>/local_text/<config name>/1.0.0,
  where the config name is '<slug>-<fingerprint>' and the fingerprint hashes the file list (path,
  size, mtime), the options above and TEXT_RULE, so an edited corpus gets a fresh build. Records
  are {'text': bytes (UTF-8), 'key': bytes}. Reading uses `builder.as_data_source(split)`: random
  access, no TensorFlow.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import os
import re
from typing import Iterator, Sequence

import tensorflow_datasets as tfds

from ssa.data.errors import DataError

DOC_UNITS = ('file', 'paragraph', 'line')


@dataclasses.dataclass(frozen=True)
class Document:
  key: str
  text: str


def list_files(paths: Sequence[str], file_pattern: str = '*.txt') -> list[tuple[str, str]]:
  """(document key prefix, absolute file path) per file under `paths`; DataError if missing/none."""
  if isinstance(paths, str):
    paths = [paths]
  if not paths:
    raise DataError('local_text: no paths given (expected at least one text file or folder).')
  out = []
  for p in paths:
    p = os.path.abspath(os.path.expanduser(str(p)))
    if os.path.isfile(p):
      out.append((os.path.basename(p), p))  # key = the file name
    elif os.path.isdir(p):
      found = []
      for dirpath, dirnames, filenames in os.walk(p):
        dirnames.sort()
        found += [os.path.join(dirpath, f) for f in sorted(filenames)
                  if fnmatch.fnmatch(f, file_pattern)]
      if not found:
        raise DataError(f'local_text: folder {p!r} contains no file matching {file_pattern!r}.')
      root = os.path.basename(p.rstrip(os.sep))
      out += [(root + '/' + os.path.relpath(f, p).replace(os.sep, '/'), f) for f in found]
    else:
      raise DataError(f'local_text: path {p!r} does not exist (expected a text file or folder).')
  return out


# Text rule of the module docstring. Bump TEXT_RULE when the rule changes: it is part of the build
# fingerprint, so builds made under an older (or no) rule are rebuilt, i.e. checked, not reused.
TEXT_RULE = 'utf8-nonul-max8or20pct-v1'
MAX_INVALID_BYTES = 8
MAX_INVALID_FRACTION = 0.20
_SURROGATE_ESCAPE = re.compile('[\udc80-\udcff]')  # one per invalid byte under surrogateescape


def text_problem(raw: bytes) -> str | None:
  """Why `raw` is not text by the text rule ('holds NUL bytes', 'N of M bytes ...'), else None."""
  if b'\x00' in raw:
    hint = (' (looks like UTF-16/32; convert it to UTF-8)'
            if raw[:2] in (b'\xff\xfe', b'\xfe\xff') else '')
    return f'holds NUL bytes{hint}'
  try:
    raw.decode('utf-8')
    return None  # fast path: valid UTF-8
  except UnicodeDecodeError:
    pass
  invalid = len(_SURROGATE_ESCAPE.findall(raw.decode('utf-8', errors='surrogateescape')))
  if invalid > max(MAX_INVALID_BYTES, MAX_INVALID_FRACTION * len(raw)):
    return (f'{invalid} of {len(raw)} bytes are not valid UTF-8 (at most '
            f'max({MAX_INVALID_BYTES}, {MAX_INVALID_FRACTION:.0%}) allowed)')
  return None


def decode_text(raw: bytes) -> str:
  """Bytes as text: UTF-8, BOM dropped, invalid bytes -> U+FFFD, newlines normalised to LF."""
  text = raw.decode('utf-8-sig', errors='replace')
  return text.replace('\r\n', '\n').replace('\r', '\n')


def read_text(path: str) -> str:
  """File as text (see decode_text); no text-rule check (read_documents checks it)."""
  with open(path, 'rb') as f:
    return decode_text(f.read())


def _not_text_error(bad: list[tuple[str, str]], n_files: int) -> DataError:
  shown = '; '.join(f'{p!r}: {why}' for p, why in bad[:5])
  more = f'; and {len(bad) - 5} more' if len(bad) > 5 else ''
  return DataError(
      f'local_text: {len(bad)} of {n_files} input file(s) are not text (expected UTF-8 text: no '
      f'NUL byte and at most max({MAX_INVALID_BYTES}, {MAX_INVALID_FRACTION:.0%}) invalid '
      f'bytes): {shown}{more}. Remove them from the input (or narrow data.file_pattern), or '
      'convert them to UTF-8 (e.g. `iconv -f latin1 -t utf-8`).')


def split_documents(text: str, doc_unit: str) -> list[str]:
  if doc_unit == 'file':
    parts = [text]
  elif doc_unit == 'paragraph':
    parts = re.split(r'\n[ \t]*\n', text)
  elif doc_unit == 'line':
    parts = text.split('\n')
  else:
    raise DataError(f'config.data.doc_unit={doc_unit!r}; expected one of {DOC_UNITS}.')
  return [p.strip() for p in parts if p.strip()]


def read_documents(paths: Sequence[str], file_pattern: str = '*.txt',
                   doc_unit: str = 'file') -> list[Document]:
  """All documents under `paths` (see the module docstring); DataError on an empty corpus."""
  if doc_unit not in DOC_UNITS:
    raise DataError(f'config.data.doc_unit={doc_unit!r}; expected one of {DOC_UNITS}.')
  if isinstance(paths, str):
    paths = [paths]
  files = list_files(paths, file_pattern)
  docs, seen, bad = [], set(), []
  for root, path in files:
    rel = root
    with open(path, 'rb') as f:
      raw = f.read()
    why = text_problem(raw)
    if why is not None:
      bad.append((path, why))
    if bad:
      continue  # only collect the other bad files
    for i, text in enumerate(split_documents(decode_text(raw), doc_unit)):
      key = f'{rel}#{i}'
      if key in seen:
        raise DataError(f'local_text: two inputs give the same document key {key!r}; give the '
                        'folders distinct names.')
      seen.add(key)
      docs.append(Document(key, text))
  if bad:
    raise _not_text_error(bad, len(files))
  if not docs:
    shown = [p for _, p in files][:5]
    more = f' (and {len(files) - 5} more)' if len(files) > 5 else ''
    raise DataError(f'local_text: empty corpus: the {len(files)} file(s) under {list(paths)} '
                    f'({shown}{more}) contain no non-whitespace text.')
  return docs


def doc_uniform(key: str) -> float:
  """u(doc) of the split rule: first 64 bits of SHA-256(key) / 2**64."""
  return int(hashlib.sha256(key.encode('utf-8')).hexdigest()[:16], 16) / 2.0**64


def assign_splits(keys: Sequence[str], validation_fraction: float,
                  test_fraction: float = 0.0) -> dict[str, list[int]]:
  """Indices of `keys` per split by the documented rule."""
  for name, f in (('validation_fraction', validation_fraction), ('test_fraction', test_fraction)):
    if not 0.0 <= f < 1.0:
      raise DataError(f'config.data.{name}={f}; expected a number in [0, 1).')
  if validation_fraction + test_fraction >= 1.0:
    raise DataError('config.data.validation_fraction + test_fraction must be < 1, got '
                    f'{validation_fraction + test_fraction}.')
  u = [doc_uniform(k) for k in keys]
  splits = {'train': [], 'validation': [], 'test': []}
  for i, ui in enumerate(u):
    if ui < test_fraction:
      splits['test'].append(i)
    elif ui < test_fraction + validation_fraction:
      splits['validation'].append(i)
    else:
      splits['train'].append(i)
  for name, f in (('validation', validation_fraction), ('test', test_fraction)):
    if f > 0 and not splits[name] and len(splits['train']) > 1:
      j = min(splits['train'], key=lambda i: u[i])
      splits['train'].remove(j)
      splits[name].append(j)
  if not splits['train']:
    raise DataError(f'local_text: {len(keys)} document(s) leave no document for the train split '
                    f'(validation_fraction={validation_fraction}, test_fraction={test_fraction}).')
  return {name: idx for name, idx in splits.items() if idx}  # empty only when fraction == 0


@dataclasses.dataclass(eq=False)
class LocalTextConfig(tfds.core.BuilderConfig):
  """Builder config of `local_text`: the corpus files and the split/document options."""
  paths: tuple[str, ...] = ()
  file_pattern: str = '*.txt'
  doc_unit: str = 'file'
  validation_fraction: float = 0.1
  test_fraction: float = 0.0


def make_config(paths: Sequence[str], *, file_pattern: str = '*.txt', doc_unit: str = 'file',
                validation_fraction: float = 0.1, test_fraction: float = 0.0,
                slug: str | None = None) -> LocalTextConfig:
  """Config whose name fingerprints the file list (path, size, mtime) and the options."""
  if isinstance(paths, str):
    paths = [paths]
  files = list_files(paths, file_pattern)
  h = hashlib.sha256(repr((doc_unit, file_pattern, validation_fraction, test_fraction,
                           TEXT_RULE)).encode())
  for root, p in files:
    st = os.stat(p)
    h.update(f'{root}|{p}|{st.st_size}|{st.st_mtime_ns}\n'.encode())
  slug = slug or re.sub(r'[^a-z0-9]+', '_', os.path.basename(
      os.path.abspath(os.path.expanduser(str(paths[0]))).rstrip(os.sep)).lower()).strip('_')
  return LocalTextConfig(name=f'{slug or "corpus"}-{h.hexdigest()[:12]}', version='1.0.0',
                         paths=tuple(os.path.abspath(os.path.expanduser(str(p))) for p in paths),
                         file_pattern=file_pattern, doc_unit=doc_unit,
                         validation_fraction=float(validation_fraction),
                         test_fraction=float(test_fraction))


class LocalText(tfds.core.GeneratorBasedBuilder):
  """Text files/folders -> train/validation(/test) array_record splits (see module docstring)."""

  VERSION = tfds.core.Version('1.0.0')
  BUILDER_CONFIG_CLASS = LocalTextConfig
  # No URLs to checksum. Also keeps tfds from locating a checksums file next to this module, which
  # needs the `importlib_resources` backport when the builder lives inside a package.
  url_infos = None

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description='Local text corpus; one record per document (ssa/data/local_text.py).',
        features=tfds.features.FeaturesDict({'text': tfds.features.Text(),
                                             'key': tfds.features.Text()}))

  def _split_generators(self, dl_manager):
    del dl_manager
    c = self.builder_config
    docs = read_documents(c.paths, c.file_pattern, c.doc_unit)
    splits = assign_splits([d.key for d in docs], c.validation_fraction, c.test_fraction)
    return {name: self._generate_examples([docs[i] for i in idx]) for name, idx in splits.items()}

  def _generate_examples(self, docs) -> Iterator[tuple[str, dict]]:
    for d in docs:
      yield d.key, {'text': d.text, 'key': d.key}


def build(config: LocalTextConfig, data_dir: str) -> LocalText:
  """Builds (once; later calls reuse the files) and returns the prepared builder."""
  builder = LocalText(config=config, data_dir=os.path.expanduser(data_dir),
                      file_format='array_record')
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(verify_ssl=True))
  return builder
