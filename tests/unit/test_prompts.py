"""Prompt rendering (sandboxed Jinja2, strict fields), template field discovery, few-shot blocks, chat wrapping."""

from __future__ import annotations

import doctest

import jinja2
import pytest

from harness.data import prompts as P
from harness.errors import DataError, SpecError

ARC_ROW = {"id": "x1", "question": "Which is a gas?", "answerKey": "B",
           "choices": {"text": ["rock", "steam", "ice"], "label": ["A", "B", "C"]}}


def test_render_lm_eval_templates():
    assert P.render("Question: {{question}}\nAnswer:", ARC_ROW) == "Question: Which is a gas?\nAnswer:"
    assert P.render("{{choices.label.index(answerKey)}}", ARC_ROW) == "1"
    assert P.render("{{ choices.text | join(', ') }}\n", ARC_ROW) == "rock, steam, ice\n"  # trailing newline kept
    assert P.render("{{ question | regex_replace('a gas', 'X') }}", ARC_ROW) == "Which is X?"


@pytest.mark.parametrize("template, name", [("{{ passage }}\n{{question}}", "passage"),
                                            ("{{ choices.labels[0] }}", "labels")])
def test_a_missing_field_names_the_field(template, name):
    with pytest.raises(DataError, match=f"reads '{name}'") as e:
        P.render(template, ARC_ROW)
    assert "question" in str(e.value)  # lists the row's fields


def test_template_fields_and_syntax_errors():
    assert P.template_fields("{{passage}}\nQuestion: {{question}}?\nAnswer:") == {"passage", "question"}
    assert P.template_fields("{{choices.label.index(answerKey)}}") == {"choices", "answerKey"}
    assert P.template_fields("{% for c in choices.text %}{{ c }}{% endfor %}") == {"choices"}
    with pytest.raises(SpecError, match="not valid Jinja2"):
        P.template_fields("{{ question ")


def test_sandbox_blocks_python_internals():
    with pytest.raises(jinja2.exceptions.SecurityError):
        P.render("{{ question.__class__.__mro__[1].__subclasses__() }}", ARC_ROW)


def test_fewshot_is_seeded_the_same_for_every_call_and_excludes_the_row():
    pool = [{"q": str(i)} for i in range(20)]
    a = P.sample_fewshot(pool, 3, seed=7)
    assert a == P.sample_fewshot(pool, 3, seed=7) and a != P.sample_fewshot(pool, 3, seed=8) and len(a) == 3
    assert pool[0] not in P.sample_fewshot(pool, 19, seed=1, exclude=pool[0])
    assert P.sample_fewshot(pool, 0, seed=1) == []
    with pytest.raises(DataError, match="too few rows"):
        P.sample_fewshot(pool, 21, seed=1)
    block = P.fewshot_block([(P.render("Q: {{q}}\nA:", r), "yes") for r in a])
    assert block == "".join(f"Q: {r['q']}\nA: yes\n\n" for r in a)


def test_chat_wrap_uses_the_tokenizers_template():
    from _causal import byte_bpe

    tok = byte_bpe("gpt2")
    with pytest.raises(SpecError, match="chat template"):
        P.chat_wrap(tok, "hi")
    tok.chat_template = ("{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}"
                         "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    assert P.chat_wrap(tok, "Question: 2+2?") == "<|user|>Question: 2+2?\n<|assistant|>"


def test_doctests():
    assert doctest.testmod(P).failed == 0
