"""Exports carry the tokenizer as Hugging Face files: transformers' AutoTokenizer loaded from them
encodes exactly as the project's tokenizer (ssa.data.tokenizers.save_hf_tokenizer, used by
ssa.convert.export)."""

import os
import shutil

import pytest
from transformers import AutoTokenizer

from ssa.convert import export as export_lib
from ssa.data import get_tokenizer
from ssa.data.tokenizers import HF_TOKENIZER_FILES, save_hf_tokenizer
from ssa.evaluation import loading
from tests.fixtures import make_legacy_fixture as fixture
from tests.test_convert_gguf import _real_gguf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A few thousand characters: prose, code, digits, whitespace runs, accents, CJK, emoji, and the
# special-token strings written as text.
TEXT = (open(os.path.join(ROOT, 'README.md'), encoding='utf-8').read()[:5000] +
        '\n\n  \t x  café naïve 日本語 🙂 12345 3.14159 <|endoftext|> <|im_end|> </s> ¡¬®ÿ\u00a0\u00ad')


def _specs():
  return ['byte', 'gpt2', 'gguf']


@pytest.mark.parametrize('name', _specs())
def test_auto_tokenizer_from_an_export_encodes_as_the_project(name, tmp_path):
  spec = f'gguf:{_real_gguf()}' if name == 'gguf' else name
  tok = get_tokenizer(spec)
  paths = save_hf_tokenizer(tok, str(tmp_path), model_max_length=1 << 20)
  assert [os.path.basename(p) for p in paths] == list(HF_TOKENIZER_FILES)
  hf = AutoTokenizer.from_pretrained(str(tmp_path))
  want = tok.encode(TEXT)
  assert len(TEXT) > 5000 and len(want) > 1000
  assert hf.encode(TEXT, add_special_tokens=False) == want
  assert hf.eos_token_id == tok.eos_id and hf.pad_token_id == tok.pad_id
  assert hf.bos_token_id == tok.bos_id
  plain = tok.encode(TEXT[:3000])  # no special-token strings: decoding is the same text
  assert hf.decode(plain) == tok.decode(plain) == TEXT[:3000]


def test_exports_carry_the_tokenizer(tmp_path):
  wd = str(tmp_path / 'ssa')
  shutil.copytree(os.path.join(fixture.OUT, 'ssa'), wd)
  loaded = loading.load(workdir=wd)
  assert export_lib.export(loaded, str(tmp_path / 'out')) == 'ssa'
  hf = AutoTokenizer.from_pretrained(str(tmp_path / 'out'))
  assert hf.encode('To be, or not', add_special_tokens=False) == list(b'To be, or not')
  assert hf.model_max_length == loaded.model.cfg.max_len


def test_a_tokenizer_without_an_exact_conversion_is_one_clear_error(tmp_path):
  sp = pytest.importorskip('sentencepiece')
  from ssa.data import DataError  # pylint: disable=g-import-not-at-top
  model = tmp_path / 'm'
  corpus = tmp_path / 'c.txt'
  corpus.write_text(TEXT)
  sp.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(model), vocab_size=200,
                                minloglevel=2)
  tok = get_tokenizer(f'sentencepiece:{model}.model')
  with pytest.raises(DataError, match=r'no exact tokenizer.json conversion for '
                     r'SentencePieceTokenizer.*tokenizer.json'):
    save_hf_tokenizer(tok, str(tmp_path / 'out'))
