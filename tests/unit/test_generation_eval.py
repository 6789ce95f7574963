"""Generation and its judgement: left-padded batches, stop sequences, format and golden rules."""

from __future__ import annotations

import pytest

from tasks.core.config.evaluation import EvalSpec
from tasks.core.config.generation import FormatSpec, GenerationSpec
from tasks.core.errors import ConfigError
from tasks.core.evaluation.generation import (
    format_ok,
    is_refusal,
    read_golden_prompts,
    text_figures,
)
from tasks.core.training.generation import Generator, cut_at_stop
from tests.tiny import build_tiny_llama


@pytest.fixture(scope="module")
def generator(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = build_tiny_llama(tmp_path_factory.mktemp("llama") / "tiny-llama")
    model = AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    return Generator(model, AutoTokenizer.from_pretrained(str(folder)), "tiny")


def test_a_batch_answers_as_each_prompt_alone(generator):
    spec = GenerationSpec(max_new_tokens=4)
    prompts = ["review : good", "review : the film was very dull and the plot was weak"]
    together = generator.generate(prompts, spec, batch_size=2)
    alone = [generator.generate([p], spec)[0] for p in prompts]
    assert [a.text for a in together] == [a.text for a in alone]
    assert all(a.output_tokens <= 4 for a in together)


def test_stop_sequences_and_format_rules():
    assert cut_at_stop("positive } more", ("}", " more")) == "positive "
    schema = {"type": "object", "required": ["sentiment"],
              "properties": {"sentiment": {"enum": ["positive", "negative"]}}}  # fmt: skip
    strict = FormatSpec(kind="json_schema", json_schema=schema)
    assert format_ok('{"sentiment": "positive"}', strict)
    assert not format_ok('{"sentiment": "meh"}', strict) and not format_ok("{", strict)
    assert format_ok("[1]", FormatSpec(kind="json"))
    assert format_ok("positive", FormatSpec(kind="regex", pattern="positive|negative"))
    assert not format_ok("positive!", FormatSpec(kind="regex", pattern="positive|negative"))
    with pytest.raises(ValueError, match="needs `json_schema`"):
        FormatSpec(kind="json_schema")
    assert is_refusal("I'm sorry, I cannot", ("i'm sorry",))


def test_text_figures():
    spec = EvalSpec(format={"kind": "json"})
    figures = text_figures(['{"a": 1}', "", "I cannot"], ['{"a": 1}', "x", "y"], spec)
    assert figures["exact_match"] == pytest.approx(1 / 3)
    assert figures["format_valid"] == pytest.approx(1 / 3)
    assert figures["empty_rate"] == pytest.approx(1 / 3)
    assert figures["refusal_rate"] == pytest.approx(1 / 3)


def test_golden_prompts(tmp_path):
    path = tmp_path / "golden.jsonl"
    path.write_text('{"prompt": "a", "expected": "b"}\n\n{"prompt": "c", "contains": ["d"]}\n')
    assert read_golden_prompts(path) == [(1, "a", "b", ()), (3, "c", None, ("d",))]
    path.write_text('{"prompt": "a"}\n')
    with pytest.raises(ConfigError, match="line 1: needs"):
        read_golden_prompts(path)
