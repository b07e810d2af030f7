"""Slow: the causal scorer against lm-eval 0.4.13's HFLM on the same tiny gpt2/llama models (fp32) and the same
rows of ARC-Easy and BoolQ (``../shared/data/llm``): per-request log-likelihoods within 1e-4, identical
acc/acc_norm, rolling log-likelihood, greedy generation, prompt rendering and text metrics.

Skips with a message when lm_eval or the data are absent."""

from __future__ import annotations

import math

import numpy as np
import pytest

from _causal import byte_bpe, llm_data_dir, read_jsonl, tiny_causal
from harness.data.prompts import render
from harness.metrics import text as T
from harness.models.causal import CausalLMScorer

pytestmark = pytest.mark.slow

lm_eval = pytest.importorskip("lm_eval", reason="lm-eval is not installed (pip install lm-eval==0.4.13)")
DATA = llm_data_dir()
if DATA is None:
    pytest.skip("../shared/data/llm is absent (set HARNESS_LLM_DATA to its path)", allow_module_level=True)

ARC_TEXT = "Question: {{question}}\nAnswer:"  # lm_eval/tasks/arc/arc_easy.yaml
BOOLQ_TEXT = "{{passage}}\nQuestion: {{question}}?\nAnswer:"  # lm_eval/tasks/super_glue/boolq/default.yaml


def arc_docs(n=20):
    docs = []
    for row in read_jsonl(DATA / "arc_easy/test.jsonl", n):
        docs.append({"context": render(ARC_TEXT, row), "choices": row["choices"]["text"],
                     "gold": row["choices"]["label"].index(row["answerKey"]), "row": row})
    return docs


def boolq_docs(n=20):
    return [{"context": render(BOOLQ_TEXT, row), "choices": ["no", "yes"], "gold": int(row["answer"]), "row": row}
            for row in read_jsonl(DATA / "boolq/dev.jsonl", n)]


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def setup(request):
    from lm_eval.models.huggingface import HFLM

    tok = byte_bpe(request.param)
    model = tiny_causal(request.param, tok, seed=3, n_positions=64 if request.param == "gpt2" else 128)
    hflm = HFLM(pretrained=model, tokenizer=tok, batch_size=4, device="cpu")
    return model, tok, hflm


def lmeval_acc(lls, choices, gold):
    """lm_eval/api/task.py ConfigurableTask.process_results (multiple_choice), verbatim formulas."""
    completion_len = np.array([float(len(i)) for i in choices])
    return float(np.argmax(lls) == gold), float(np.argmax(np.array(lls) / completion_len) == gold)


@pytest.mark.parametrize("share", [True, False], ids=["shared-context", "full-forward"])
@pytest.mark.parametrize("docs_fn", [arc_docs, boolq_docs], ids=["arc_easy", "boolq"])
def test_multiple_choice_loglikelihoods_and_accuracy_match_lm_eval(setup, docs_fn, share):
    from lm_eval.api.instance import Instance

    model, tok, hflm = setup
    docs = docs_fn()
    reqs = [(d["context"], " " + c) for d in docs for c in d["choices"]]
    inst = [Instance("loglikelihood", doc={}, arguments=r, idx=i) for i, r in enumerate(reqs)]
    theirs = hflm.loglikelihood(inst, disable_tqdm=True)
    ours = CausalLMScorer(model, tok, batch_tokens=512, share_context=share).loglikelihood(reqs)
    np.testing.assert_allclose(ours.loglik, [t[0] for t in theirs], atol=1e-4, rtol=0)
    assert ours.is_greedy.tolist() == [t[1] for t in theirs]
    splits = np.cumsum([len(d["choices"]) for d in docs])[:-1]
    ll_ours = np.split(ours.loglik, splits)
    ll_theirs = np.split(np.array([t[0] for t in theirs]), splits)
    s = T.multiple_choice_scores(ll_ours, [d["choices"] for d in docs], [d["gold"] for d in docs])
    want = [lmeval_acc(lt, d["choices"], d["gold"]) for lt, d in zip(ll_theirs, docs)]
    assert s["acc"].tolist() == [w[0] for w in want]
    assert s["acc_norm"].tolist() == [w[1] for w in want]


def test_rolling_loglikelihood_matches_lm_eval(setup):
    from lm_eval.api.instance import Instance

    model, tok, hflm = setup
    texts = [d["row"]["passage"] for d in boolq_docs(4)] + ["A short one."]
    theirs = hflm.loglikelihood_rolling([Instance("loglikelihood_rolling", doc={}, arguments=(t,), idx=i)
                                         for i, t in enumerate(texts)], disable_tqdm=True)
    ours, n_tokens = CausalLMScorer(model, tok, batch_tokens=300).loglikelihood_rolling(texts)
    # lm-eval sums each window's token log-probs in float32 (ulp 5e-4 at -6000); ours sums in float64
    np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=1e-7)
    assert (n_tokens > hflm.max_length).any()  # several windows were scored
    from lm_eval.api.metrics import bits_per_byte, weighted_perplexity

    b = T.perplexity_stats(ours, [T.count_bytes(t) for t in texts])
    w = T.perplexity_stats(ours, [T.count_words(t) for t in texts])
    assert T.bits_per_byte_value(b.sum(0)) == pytest.approx(bits_per_byte(list(map(tuple, b))))
    assert T.perplexity_value(w.sum(0)) == pytest.approx(weighted_perplexity(list(map(tuple, w))))


def test_generation_matches_lm_eval_and_model_generate(setup):
    import torch
    from lm_eval.api.instance import Instance

    model, tok, hflm = setup
    prompts = [d["context"] for d in arc_docs(6)]
    stop = ["\n", "Question:"]
    kw = {"until": list(stop), "max_gen_toks": 16, "do_sample": False}
    theirs = hflm.generate_until([Instance("generate_until", doc={}, arguments=(p, dict(kw)), idx=i)
                                  for i, p in enumerate(prompts)], disable_tqdm=True)
    ours = CausalLMScorer(model, tok, batch_size=4).generate_until(prompts, stop=stop, max_new_tokens=16)
    assert ours == theirs
    for p, o in zip(prompts, ours):
        ids = torch.tensor([tok.encode(p)[-(hflm.max_length - 16):]])
        g = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=16,
                           pad_token_id=tok.pad_token_id)
        text = tok.decode(g[0, ids.shape[1]:], skip_special_tokens=True)
        for s in stop + [tok.eos_token]:
            text = text.split(s)[0]
        assert o == text


def test_templates_and_exact_match_agree_with_lm_eval():
    from lm_eval.api.metrics import exact_match_hf_evaluate
    from lm_eval.utils import apply_template

    for d in arc_docs(5) + boolq_docs(5):
        row = d["row"]
        template = ARC_TEXT if "choices" in row else BOOLQ_TEXT
        assert render(template, row) == apply_template(template, row)
    arc = read_jsonl(DATA / "arc_easy/test.jsonl", 3)
    assert [render("{{choices.label.index(answerKey)}}", r) for r in arc] == \
        [apply_template("{{choices.label.index(answerKey)}}", r) for r in arc]
    gsm = read_jsonl(DATA / "gsm8k/test.jsonl", 10)
    options = dict(ignore_case=True, ignore_punctuation=False, regexes_to_ignore=[",", "\\$", "(?s).*#### ", "\\.$"])
    preds = ["The answer is " + r["answer"].split("#### ")[-1] + "." for r in gsm[:5]] + ["12"] * 5
    for p, r in zip(preds, gsm):
        want = exact_match_hf_evaluate([p], [r["answer"]], **options)["exact_match"]
        assert T.exact_match(p, r["answer"], **options) == want
        assert math.isfinite(T.numeric_match(p, r["answer"]))


def test_answer_regex_matches_lm_eval_regex_filter():
    from lm_eval.filters.extraction import RegexFilter

    outputs = ["so 3 + 4 = 7. #### 7", "The total is $1,200.", "no number", "#### -3.5\nQuestion: x", "12 then 15"]
    for pattern, group, match in [(r"#### (\-?[0-9\.\,]+)", 0, "first"),
                                  (r"(-?[$0-9.,]{2,})|(-?[0-9]+)", -1, "last")]:
        theirs = RegexFilter(regex_pattern=pattern, group_select=group).apply([[o] for o in outputs], [{}] * 5)
        assert [T.extract_answer(o, pattern, match=match) for o in outputs] == [t[0] for t in theirs]
