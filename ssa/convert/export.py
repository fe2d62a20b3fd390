"""Write a trained model in Hugging Face format, as a transformers model with remote code, or in
the SSA checkpoint format.

    export(loaded, out, fmt='auto', overwrite=False)   # loaded: ssa.evaluation.loading.Loaded
                                                      # (or any object with .model, .variables,
                                                      # .config, .step, .directory)

The command line is export.py at the top of the repository. The formats (`fmt`, --format):

- 'hf': Hugging Face safetensors + config.json of GPT-2 / GPT-NeoX / Llama (ssa/convert/hf.py);
  only for a strategy without temperatures (ssa.strategy=vanilla).
- 'ssa': the SSA checkpoint format (ssa/convert/ssa_format.py), any model; it records the
  tokenizer spec and the source step in ssa_config.json 'extra'; `model.init_from=ssa:DIR`
  trains from it.
- 'hf_remote': any model (every family and strategy) as a transformers model with remote code
  (ssa/convert/hf_remote_format.py): config.json with auto_map, configuration_ssa.py and
  modeling_ssa.py (a PyTorch port of the model), model.safetensors (the SSA format's tensors,
  '/' -> '.'), loaded with AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True);
  config.json also carries the tokenizer's bos / eos / pad ids and 'ssa_export' the same 'extra'
  as the SSA format.
- 'auto' (default): 'hf' for ssa.strategy=vanilla, 'ssa' otherwise.

Every format carries the tokenizer as Hugging Face files (tokenizer.json, tokenizer_config.json,
special_tokens_map.json: ssa.data.tokenizers.save_hf_tokenizer) for the byte, gpt2, hf: and gguf:
tokenizers and for SentencePiece unigram / bpe / char models, so AutoTokenizer.from_pretrained(out)
encodes as the project does (checked on a built-in probe text before writing; a tokenizer that
fails it or has no conversion, e.g. a SentencePiece word model, gets one warning and no files).

Where the export goes (`check_out`, `atomic_directory`; every refusal is a ConversionError
naming the path, raised before anything is written):

- `out` does not exist: it is created (its missing parents too).
- `out` is an empty directory: it is replaced by the export.
- `out` is a non-empty directory: refused, unless overwrite=True (export.py --overwrite). Then
  the export replaces the whole directory: nothing of the old one is kept (a Hugging Face export
  replaced by an SSA one leaves no config.json behind). Refused even then when the directory
  holds the current working directory or the checkpoint being exported.
- `out`, or one of its parents, is a file (not a directory): refused.
- `out` is a URL (gs://, s3://, ...): refused. save_hf / save_ssa / save_hf_remote write local
  files only (os / open), and the rename that makes the export atomic is a local-filesystem
  operation; export to a local directory and copy it (e.g. `gsutil -m cp -r DIR
  gs://bucket/path`). A symbolic link is followed: the export goes where it points.

Atomic: the files are written into a new sibling directory `.<name>.tmp-<pid>-<hex>` (same
parent, so same filesystem) which is then renamed to `out`. An existing `out` is first renamed
aside to `.<name>.old-<pid>-<hex>`, the new directory renamed in, and the old one deleted. If
anything fails before the final rename (a format that cannot represent the model, a full disk,
an interrupt), the temporary directory is removed and `out` is as it was; if the final rename
itself fails the old directory is renamed back. Between the two renames (microseconds) `out`
does not exist; a kill exactly there leaves the old export under its `.old-` name.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
from typing import Iterable, Iterator

from ssa import strategies
from ssa.convert.common import ConversionError
from ssa.convert.hf import save_hf
from ssa.convert.hf_remote_format import save_hf_remote
from ssa.convert.ssa_format import save_ssa
from ssa.data import DataError
from ssa.data.tokenizers import get_tokenizer, save_hf_tokenizer

FORMATS = ('auto', 'hf', 'ssa', 'hf_remote')


def _inside(path: str, directory: str) -> bool:
  """Whether `path` is `directory` or below it (both absolute, symlinks resolved)."""
  return os.path.commonpath([path, directory]) == directory


def check_out(out: str, overwrite: bool = False, keep: Iterable[str] = ()) -> str:
  """Checks that `out` may receive an export (see the module docstring); returns its local path.

  `keep`: directories that must survive, so `out` may not contain them when it would be
  replaced (the working directory is always one). Raises ConversionError naming the path."""
  if '://' in out:
    raise ConversionError(f'--out={out}: only local directories are supported (the export is '
                          'written with local file operations and renamed into place); export '
                          'to a local directory and copy it, e.g. with gsutil -m cp -r.')
  path = os.path.realpath(os.path.expanduser(out))
  parent = os.path.dirname(path)
  if parent == path:
    raise ConversionError(f'--out={out}: cannot export to the root directory.')
  if os.path.lexists(path) and not os.path.isdir(path):
    raise ConversionError(f'--out={out}: {path} exists and is not a directory; remove it or '
                          'pick another --out.')
  ancestor = parent
  while not os.path.exists(ancestor):
    ancestor = os.path.dirname(ancestor)
  if not os.path.isdir(ancestor):
    raise ConversionError(f'--out={out}: {ancestor} is a file, not a directory.')
  if os.path.isdir(path):
    try:
      entries = os.listdir(path)
    except OSError as e:
      raise ConversionError(f'--out={out}: cannot read directory {path} ({e}).') from e
    if entries and not overwrite:
      shown = ', '.join(sorted(entries)[:5]) + (', ...' if len(entries) > 5 else '')
      raise ConversionError(f'--out={out}: directory {path} exists and is not empty ({shown}); '
                            'pass --overwrite (overwrite=True) to replace it, or pick an empty '
                            'or new directory.')
    for k in [os.getcwd(), *keep]:
      k = os.path.realpath(os.path.expanduser(k))
      if _inside(k, path):
        raise ConversionError(f'--out={out}: replacing {path} would delete {k}, which it '
                              'contains; pick another --out.')
  return path


def _sibling(path: str, tag: str) -> str:
  """A name `.<name>.<tag>-<pid>-<hex>` next to `path` that does not exist yet."""
  parent, name = os.path.split(path)
  while True:
    p = os.path.join(parent, f'.{name}.{tag}-{os.getpid()}-{secrets.token_hex(4)}')
    if not os.path.lexists(p):
      return p


@contextlib.contextmanager
def atomic_directory(out: str, overwrite: bool = False, keep: Iterable[str] = ()
                     ) -> Iterator[str]:
  """Yields a temporary directory to write into; on a normal exit it becomes `out`.

  Checked first with `check_out` (same arguments); see the module docstring for the steps and
  what is left behind when the body or a rename fails (nothing, and `out` as it was)."""
  keep = list(keep)
  path = check_out(out, overwrite, keep)
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = _sibling(path, 'tmp')
    os.mkdir(tmp)
  except OSError as e:
    raise ConversionError(f'--out={out}: cannot create a directory next to {path} ({e}).') from e
  try:
    try:
      yield tmp
    except OSError as e:
      raise ConversionError(f'--out={out}: writing the export failed ({e}); {path} is '
                            'unchanged.') from e
    check_out(out, overwrite, keep)  # again: the directory may have changed meanwhile
    if not os.path.isdir(path):
      try:
        os.rename(tmp, path)
      except OSError as e:
        raise ConversionError(f'--out={out}: cannot rename {tmp} to {path} ({e}).') from e
      return
    old = _sibling(path, 'old')
    try:
      os.rename(path, old)
    except OSError as e:
      raise ConversionError(f'--out={out}: cannot move {path} aside ({e}); it is unchanged.'
                            ) from e
    try:
      os.rename(tmp, path)
    except OSError as e:
      os.rename(old, path)
      raise ConversionError(f'--out={out}: cannot rename {tmp} to {path} ({e}); the old '
                            'directory is back in place.') from e
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  try:
    shutil.rmtree(old)
  except OSError as e:  # the export is in place; only the clean-up failed
    logging.warning('Exported to %s, but could not delete the old directory %s: %s', path, old,
                    e)


def export(loaded, out: str, fmt: str = 'auto', overwrite: bool = False) -> str:
  """Writes `loaded`'s model to `out` atomically; returns the format written ('hf', 'ssa' or
  'hf_remote').

  A non-empty `out` is refused unless `overwrite` (then it is replaced as a whole); see the
  module docstring."""
  mcfg, scfg = loaded.model.cfg, loaded.model.ssa
  if fmt not in FORMATS:
    raise ConversionError(f'--format={fmt!r} is not valid; expected one of {list(FORMATS)}.')
  plain = not strategies.temperature_specs(scfg)  # Hugging Face models have no temperatures
  if fmt == 'auto':
    fmt = 'hf' if plain else 'ssa'
  if fmt == 'hf' and not plain:  # e.g. yarn: no tau_* params, but a temperature all the same
    raise ConversionError(f'--format=hf cannot represent ssa.strategy={scfg.strategy!r}; '
                          'use --format=ssa (or auto) or --format=hf_remote.')
  source = getattr(loaded, 'directory', None)
  with atomic_directory(out, overwrite, keep=[source] if source else []) as tmp:
    tok = _tokenizer(loaded.config)
    if fmt != 'hf':
      extra = {'tokenizer': loaded.config.data.tokenizer, 'step': loaded.step,
               'source': loaded.directory}
    if fmt == 'hf':
      save_hf(loaded.variables['params'], mcfg, tmp)
    elif fmt == 'hf_remote':
      special = {} if tok is None else {'bos_token_id': tok.bos_id, 'eos_token_id': tok.eos_id,
                                        'pad_token_id': tok.pad_id}
      save_hf_remote(loaded.variables, mcfg, scfg, tmp, extra=extra, special_tokens=special)
    else:
      save_ssa(loaded.variables, mcfg, scfg, tmp, extra=extra)
    write_tokenizer(loaded.config, tmp, mcfg.max_len, tok=tok)
  return fmt


def _tokenizer(config):
  """The tokenizer of config.data.tokenizer, or None (with one warning) if it cannot be built."""
  d = config.data
  try:
    return get_tokenizer(d.tokenizer, d.get('eos_token'))
  except DataError as e:
    logging.warning('export: no tokenizer files written: %s', e)
    return None


def write_tokenizer(config, out_dir: str, max_len: int, tok=None) -> bool:
  """tokenizer.json + tokenizer_config.json + special_tokens_map.json of config.data.tokenizer
  (transformers' AutoTokenizer then encodes as the project does); a tokenizer without an exact
  conversion (e.g. a SentencePiece word model, or one whose conversion encodes the probe text
  differently) is reported in one warning and the export goes on without them.
  `tok`: the tokenizer already built from config (built here when None)."""
  tok = _tokenizer(config) if tok is None else tok
  if tok is None:
    return False
  try:
    save_hf_tokenizer(tok, out_dir, max_len)
  except DataError as e:
    logging.warning('export: no tokenizer files written: %s', e)
    return False
  return True
