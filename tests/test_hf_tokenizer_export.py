"""Exports carry the tokenizer as Hugging Face files: transformers' AutoTokenizer loaded from them
encodes exactly as the project's tokenizer (ssa.data.tokenizers.save_hf_tokenizer, used by
ssa.convert.export): byte, gpt2, gguf, and SentencePiece models trained here (unigram, bpe, char,
byte fallback, user-defined pieces); the SentencePiece configurations without an exact conversion
are one DataError, and the exporter's one warning."""

import logging
import os
import re
import shutil
import unicodedata

import ml_collections
import pytest
from transformers import AutoTokenizer

from ssa.convert import export as export_lib
from ssa.data import DataError, get_tokenizer
from ssa.data import tokenizers as tokenizers_lib
from ssa.data.tokenizers import HF_TOKENIZER_FILES, save_hf_tokenizer
from ssa.evaluation import loading
from tests.fixtures import make_legacy_fixture as fixture
from tests.test_convert_gguf import _real_gguf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A frozen copy of the README's first 20,000 characters (prose, markdown tables, code, numbers):
# the tests do not change when the README does.
PROSE = open(os.path.join(ROOT, 'tests', 'fixtures', 'tokenizer_text.md'), encoding='utf-8').read()
# A few thousand characters: prose, code, digits, whitespace runs, accents, CJK, emoji, and the
# special-token strings written as text.
TEXT = (PROSE[:5000] +
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


# SentencePiece models trained here on a small generated corpus (README prose, code, digits and a
# few scripts; no emoji, so emoji are outside every vocabulary). byte_fallback needs 256 byte
# pieces on top of the characters, hence the larger vocabulary.
SPM_CONFIGS = {
    'unigram': dict(model_type='unigram', vocab_size=250),
    'unigram_byte_fallback': dict(model_type='unigram', vocab_size=500, byte_fallback=True),
    'bpe': dict(model_type='bpe', vocab_size=250),
    'bpe_byte_fallback': dict(model_type='bpe', vocab_size=500, byte_fallback=True),
    'unigram_user_defined_pad': dict(model_type='unigram', vocab_size=250, pad_id=3,
                                     user_defined_symbols=['<sep>', '<|im_end|>']),
    'char': dict(model_type='char', vocab_size=200),
}
_LINES = ('café naïve façade Ångström Zürich Dvořák ñandú tiếng Việt 12345 3.14159 -0.5e-3',
          'Ελληνικά русский язык العربية 한국어 中文文本 日本語のテキスト',
          'def f(x):\n    return {"a": [1, 2]}  # <tag> a/b <= c\n')
SPM_CORPUS = PROSE + (
    '\n'.join(_LINES) + '\n') * 5
# Several thousand characters: TEXT, then whitespace runs, tabs, newlines, leading / trailing
# spaces, other scripts, NFKC-mapped characters, emoji and user-defined / control piece strings.
SPM_TEXT = TEXT + (
    '\n\n\n   three leading spaces, three trailing   \n\t\ttabs\tinside\t\t\n\r\nwindows\r\n'
    'a  b   c    d\u3000ideographic\u00a0nbsp \u2581 literal\u2581 \n' + '\n'.join(_LINES) +
    '\nfull width ＡＢＣ１２３ ① ½ ﬁ ™ — “quotes” … 🙂👍🏽🚀 😀😀 x<sep>y <sep> a<|im_end|>\n'
    '</s><s><unk> <0x41> <pad> 的 ☃ ∑∫ \x07 end   ')


def _spm(tmp_path, **options):
  """A SentencePiece model DIR/spm.model trained on SPM_CORPUS with `options`: (project
  tokenizer, sentencepiece processor)."""
  sp = pytest.importorskip('sentencepiece')
  tmp_path.mkdir(parents=True, exist_ok=True)
  corpus, prefix = tmp_path / 'corpus.txt', tmp_path / 'spm'
  corpus.write_text(SPM_CORPUS, encoding='utf-8')
  sp.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(prefix), minloglevel=2,
                                num_threads=1, **options)
  path = f'{prefix}.model'
  return get_tokenizer(f'sentencepiece:{path}'), sp.SentencePieceProcessor(model_file=path)


@pytest.mark.parametrize('config', list(SPM_CONFIGS))
def test_a_sentencepiece_model_exports_a_tokenizer_that_encodes_as_it(config, tmp_path):
  options = SPM_CONFIGS[config]
  tok, sp = _spm(tmp_path, **options)
  paths = save_hf_tokenizer(tok, str(tmp_path / 'out'))
  assert [os.path.basename(p) for p in paths] == list(HF_TOKENIZER_FILES)
  hf = AutoTokenizer.from_pretrained(str(tmp_path / 'out'))
  want = tok.encode(SPM_TEXT)
  assert len(SPM_TEXT) > 5000 and len(want) > 1000
  assert hf.encode(SPM_TEXT, add_special_tokens=False) == want
  # Each line alone (text boundaries: leading / trailing spaces, empty lines): the same ids, or,
  # for a unigram model, a segmentation of exactly the same total score: SentencePiece decides
  # such ties by float32 rounding of the running score ('| 2000 |' as '00' '0' or '0' '00'
  # depending on the text before it), tokenizers in float64 (see save_hf_tokenizer).
  lines = SPM_TEXT.split('\n')
  ties = 0
  for line, got in zip(lines, hf(lines, add_special_tokens=False)['input_ids']):
    line_want = tok.encode(line)
    if got != line_want:
      assert options['model_type'] == 'unigram', line
      assert sum(map(sp.get_score, got)) == pytest.approx(sum(map(sp.get_score, line_want)))
      ties += 1
  assert ties <= 1
  assert sp.eos_id() not in want  # '</s>' in text is plain text, as in SentencePiece
  assert (sp.unk_id() in want) == (not options.get('byte_fallback'))  # emoji: unknown or bytes
  assert (hf.eos_token_id, hf.pad_token_id, hf.bos_token_id, hf.unk_token_id) == (
      tok.eos_id, tok.pad_id, tok.bos_id, sp.unk_id())
  assert tok.pad_id == (3 if 'pad_id' in options else tok.eos_id)
  if 'user_defined_symbols' in options:
    assert sp.piece_to_id('<sep>') in tok.encode('x<sep>y')
  # decoding: equal to SentencePiece's wherever its decode gives the text back (with unknown
  # pieces it does not: SentencePiece writes ' ⁇ ', the tokenizer '<unk>')
  round_trips = [t for t in lines if tok.decode(tok.encode(t)) == t]
  assert len(round_trips) > 50
  assert [hf.decode(tok.encode(t)) for t in round_trips] == round_trips
  if options.get('byte_fallback'):  # no unknown pieces: every id decodes as in SentencePiece
    assert hf.decode(want) == tok.decode(want)


@pytest.mark.parametrize('options, match', [
    (dict(model_type='bpe', user_defined_symbols=['<sep>']), 'BPE model with user-defined'),
    (dict(model_type='word'), 'model_type WORD'),
    (dict(model_type='unigram', treat_whitespace_as_suffix=True), 'treat_whitespace_as_suffix')])
def test_a_sentencepiece_model_without_an_exact_conversion_is_one_clear_error(
    options, match, tmp_path):
  tok, _ = _spm(tmp_path, vocab_size=250, **options)
  with pytest.raises(DataError, match=rf'^tokenizer {re.escape(tok.name)}: .*{match}.*'
                     r"give the model a tokenizer.json with 'hf:PATH' instead.$"):
    save_hf_tokenizer(tok, str(tmp_path / 'out'))
  assert not os.path.exists(tmp_path / 'out')


def test_a_unigram_tie_is_accepted_and_a_worse_segmentation_is_not(tmp_path):
  # '000' is '0' '00' or '00' '0': the same pieces, the same total score, two best segmentations
  # (SentencePiece picks one by float32 rounding, tokenizers by float64). '0' '0' '0' spells the
  # same text with a lower score; '0' '00' '00' spells other text.
  tok, sp = _spm(tmp_path / 'u', **SPM_CONFIGS['unigram_byte_fallback'])
  hf, _, _ = tokenizers_lib._as_hf_tokenizer(tok)
  zero, zeros = sp.piece_to_id('0'), sp.piece_to_id('00')
  assert sp.unk_id() not in (zero, zeros) and 2 * sp.get_score(zero) < sp.get_score(zeros)
  tie = tokenizers_lib._equal_score_segmentation
  assert tie(tok, hf, [zero, zeros], [zeros, zero])
  assert not tie(tok, hf, [zero, zeros], [zero, zero, zero])
  assert not tie(tok, hf, [zero, zeros], [zero, zeros, zeros])
  bpe, _ = _spm(tmp_path / 'b', model_type='bpe', vocab_size=250)
  bpe_hf, _, _ = tokenizers_lib._as_hf_tokenizer(bpe)
  a, b = bpe._sp.piece_to_id('0'), bpe._sp.piece_to_id('00')
  assert bpe._sp.unk_id() not in (a, b)
  assert not tie(bpe, bpe_hf, [a, b], [b, a])  # only unigram models break ties by score


def test_a_conversion_that_encodes_the_probe_differently_is_refused(tmp_path, monkeypatch):
  # Decomposed (NFD) text: tokenizers' Precompiled normalizer maps a grapheme cluster at once
  # where SentencePiece takes the longest match, so NFD text is not converted exactly (the
  # built-in probe is NFC). With it in the probe, the check names the first difference.
  tok, _ = _spm(tmp_path, model_type='unigram', vocab_size=250)
  nfd = unicodedata.normalize('NFD', 'tiếng Việt 한국어 がぎぐ')
  monkeypatch.setattr(tokenizers_lib, '_HF_PROBE_PARTS', ('plain text', nfd))
  with pytest.raises(DataError, match=rf'^tokenizer {re.escape(tok.name)}: the tokenizer.json '
                     r'converted from SentencePieceTokenizer encodes the built-in probe text '
                     r'differently \(first difference at token \d+, near .*\)'
                     r"; give the model a tokenizer.json with 'hf:PATH' instead.$"):
    save_hf_tokenizer(tok, str(tmp_path / 'out'))


def test_the_exporter_writes_sentencepiece_files_and_warns_once_where_it_cannot(tmp_path, caplog):
  _spm(tmp_path / 'ok', model_type='bpe', vocab_size=250)
  assert export_lib.write_tokenizer(_config(tmp_path / 'ok'), str(tmp_path / 'a'), 128)
  assert sorted(os.listdir(tmp_path / 'a')) == sorted(HF_TOKENIZER_FILES)
  assert AutoTokenizer.from_pretrained(str(tmp_path / 'a')).model_max_length == 128
  _spm(tmp_path / 'refused', model_type='word', vocab_size=250)
  os.makedirs(tmp_path / 'b')
  with caplog.at_level(logging.WARNING):
    assert not export_lib.write_tokenizer(_config(tmp_path / 'refused'), str(tmp_path / 'b'), 128)
  warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
  assert len(warnings) == 1 and 'no tokenizer files written' in warnings[0]
  assert 'model_type WORD' in warnings[0] and os.listdir(tmp_path / 'b') == []


def _config(model_dir):
  """An export config whose tokenizer is the SentencePiece model in model_dir (see _spm)."""
  return ml_collections.ConfigDict({'data': {'tokenizer': f'sentencepiece:{model_dir}/spm.model'}})
