"""The generative example's base: a random decoder whose vocabulary holds the template words."""

from __future__ import annotations

from transformers import AutoModelForCausalLM, AutoTokenizer

from tasks.core.catalog.scratch import build_decoder, vocabulary


def test_vocabulary_keeps_specials_extras_then_frequent_words():
    words = vocabulary(["b a a", "c a b"], 11, ['{"sentiment":', "a"])
    assert words[:7] == ["<pad>", "<unk>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>"]
    assert words[7:] == ['{"sentiment":', "a", "b", "c"]
    assert len(vocabulary(["x y z w"], 9, [])) == 9


def test_decoder_round_trips_a_json_answer(tmp_path):
    folder = build_decoder(tmp_path / "dec", ["a good film", "a bad film"],
                           ['{"sentiment":', '"positive"}'], hidden=32)  # fmt: skip
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    answer = '{"sentiment": "positive"}'
    assert tokenizer.decode(tokenizer(answer)["input_ids"]) == answer
    assert tokenizer.chat_template and "text-generation" in (folder / "README.md").read_text()
    model = AutoModelForCausalLM.from_pretrained(str(folder))
    assert model.config.vocab_size == len(tokenizer)
