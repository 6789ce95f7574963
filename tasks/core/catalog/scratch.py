"""A small decoder built from a text corpus: the base model of the offline generative example.

No pretrained causal LM installs here, so the generative quickstart builds one: a
Llama-shaped decoder with a word-level vocabulary taken from the training texts (plus the
words of the instruction and answer templates) and a chat template, randomly initialised.
It knows nothing before fine-tuning - which is the point of the example: every figure the
fine-tuned model reaches over this base is learnt by the LoRA adapter from the data. The
folder is then imported into the mirror like any downloaded model (``import_folder``).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} </s> {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)
SPECIAL = ["<pad>", "<unk>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>"]
CARD = """---
license: apache-2.0
library_name: transformers
pipeline_tag: text-generation
---
# {name}

A randomly initialised {layers}-layer, {hidden}-wide Llama-shaped decoder with a word-level
vocabulary of {vocab} words, built by `loraflow quickstart-generative` from its training texts.
It has learnt nothing: the offline example shows what a LoRA adapter learns on top of it.
"""


def vocabulary(texts: list[str], size: int, extra: list[str]) -> list[str]:
    """Special tokens, ``extra`` words, then the most frequent whitespace words of ``texts``."""
    counts = Counter(word for text in texts for word in text.split())
    words = list(SPECIAL) + [w for w in dict.fromkeys(extra) if w not in SPECIAL]
    seen = set(words)
    for word, _ in counts.most_common():
        if len(words) >= size:
            break
        if word not in seen:
            words.append(word)
            seen.add(word)
    return words


def build_decoder(
    folder: Path,
    texts: list[str],
    extra_words: list[str],
    vocab_size: int = 8000,
    hidden: int = 128,
    layers: int = 2,
    seed: int = 0,
) -> Path:
    """Save tokenizer (with chat template), safetensors weights and a model card in ``folder``."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    words = vocabulary(texts, vocab_size, extra_words)
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        additional_special_tokens=["<|system|>", "<|user|>", "<|assistant|>"],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(words),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=2,
        eos_token_id=3,
        pad_token_id=0,
    )
    model = LlamaForCausalLM(config)
    # Default init leaves every logit ~0 behind the final RMSNorm and a frozen head then caps
    # how peaked an answer can get; a unit-scale head lets the adapter learn in few steps.
    torch.nn.init.normal_(model.lm_head.weight, std=1.0)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    card = CARD.format(name=folder.name, layers=layers, hidden=hidden, vocab=len(words))
    (folder / "README.md").write_text(card)
    return folder
