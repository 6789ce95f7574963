"""The last layer computed for the first token only: same logits, same LoRA gradients, whole
hidden states when they are asked for, and no change to heads that read other positions."""

from __future__ import annotations

import copy
import threading

import pytest
import torch
import transformers

from tasks.core.config.train import LoraSpec
from tasks.core.training.first_token import (
    FIRST_TOKEN_HEADS,
    cut_block,
    cut_last_layer,
    uncut_last_layer,
)
from tasks.core.training.modeling import add_lora

SIZES = dict(
    vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
    intermediate_size=37, max_position_embeddings=80, num_labels=2,
)  # fmt: skip
HEADS = {  # every head in FIRST_TOKEN_HEADS, each built tiny and random
    "BertForSequenceClassification": ("BertConfig", {}),
    "RobertaForSequenceClassification": ("RobertaConfig", {"pad_token_id": 1}),
    "XLMRobertaForSequenceClassification": ("XLMRobertaConfig", {"pad_token_id": 1}),
    "CamembertForSequenceClassification": ("CamembertConfig", {"pad_token_id": 1}),
    "ElectraForSequenceClassification": ("ElectraConfig", {"embedding_size": 16}),
}


def tiny(head: str, dropout: float = 0.0, **extra):
    config_name, kwargs = HEADS.get(head, (None, {}))
    config = getattr(
        transformers, config_name or head.replace("ForSequenceClassification", "Config")
    )
    sizes = {**SIZES, **kwargs, **extra}
    config = config(**sizes, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    torch.manual_seed(0)
    return getattr(transformers, head)(config)


def batch(lengths=(9, 4, 7)):
    """Right-padded ids (first token 2, pads 1 for RoBERTa-style and BERT alike)."""
    torch.manual_seed(1)
    width = max(lengths)
    ids = torch.randint(5, 50, (len(lengths), width))
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
        ids[row, n:] = 1
    ids[:, 0] = 2
    return {"input_ids": ids, "attention_mask": mask}


def last_layer_rows(model) -> list[int]:
    """The sequence length each forward sends through the last layer's feed-forward block."""
    seen: list[int] = []
    cut_block(model).register_forward_hook(lambda m, args, out: seen.append(out.shape[1]))
    return seen


def test_every_listed_head_is_built_here():
    assert set(HEADS) == FIRST_TOKEN_HEADS


@pytest.mark.parametrize("head", sorted(FIRST_TOKEN_HEADS))
def test_same_logits_with_the_last_layer_cut_to_the_first_token(head):
    whole = tiny(head).eval()
    cut = copy.deepcopy(whole)
    assert cut_last_layer(cut)
    rows = last_layer_rows(cut)
    with torch.inference_mode():
        torch.testing.assert_close(cut(**batch()).logits, whole(**batch()).logits)
    assert rows == [1]  # the cut is in effect: one position through the feed-forward block


def test_the_cut_block_gets_contiguous_rows():
    """The first token's rows go on as their own [batch, 1, hidden] tensors: a strided slice
    made the block's Linears broadcast their weight per example (aten::bmm over a [batch,
    hidden, hidden] copy), which cost a bf16 CPU LoRA step 1.2x (docs/benchmarks.md)."""
    model = tiny("BertForSequenceClassification")
    assert cut_last_layer(model)
    seen = []
    cut_block(model).register_forward_pre_hook(lambda m, args: seen.extend(args))
    model(**batch())
    assert [tuple(a.shape) for a in seen] == [(3, 1, 32)] * 2
    assert all(a.is_contiguous() for a in seen)


@pytest.mark.parametrize(
    "head", ["BertForSequenceClassification", "RobertaForSequenceClassification"]
)
def test_same_lora_gradients_when_training(head):
    labels = torch.tensor([0, 1, 1])
    grads = []
    for cut in (False, True):
        model = add_lora(tiny(head), LoraSpec(r=4, alpha=8, dropout=0.0))
        if cut:
            assert cut_last_layer(model)
        model.train()
        model(**batch(), labels=labels).loss.backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 4
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], msg=name)


def test_hidden_states_asked_for_are_whole():
    whole = tiny("BertForSequenceClassification").eval()
    cut = copy.deepcopy(whole)
    cut_last_layer(cut)
    with torch.inference_mode():
        got = cut(**batch(), output_hidden_states=True)
        want = whole(**batch(), output_hidden_states=True)
        plain = cut(**batch())  # the next plain forward is cut again
    assert got.hidden_states[-1].shape == want.hidden_states[-1].shape
    torch.testing.assert_close(got.hidden_states[-1], want.hidden_states[-1])
    torch.testing.assert_close(got.logits, want.logits)
    torch.testing.assert_close(plain.logits, want.logits)


def test_a_config_that_returns_hidden_states_runs_whole():
    model = tiny("BertForSequenceClassification", output_hidden_states=True).eval()
    cut_last_layer(model)
    rows = last_layer_rows(model)
    with torch.inference_mode():
        out = model(**batch())
    assert rows == [9] and out.hidden_states[-1].shape[1] == 9


def test_another_thread_asking_for_hidden_states_does_not_uncut_this_one():
    model = tiny("BertForSequenceClassification").eval()
    cut_last_layer(model)
    rows = last_layer_rows(model)
    inside = threading.Event()
    release = threading.Event()

    def hold(module, args):  # the other thread stops inside its whole forward
        if threading.current_thread().name == "states":
            inside.set()
            release.wait(10)

    handle = model.bert.encoder.layer[0].register_forward_pre_hook(hold)
    with torch.inference_mode():
        other = threading.Thread(
            target=lambda: model(**batch(), output_hidden_states=True), name="states"
        )
        other.start()
        assert inside.wait(10)
        model(**batch())  # this thread's forward, while the other is mid-way
        release.set()
        other.join(10)
    handle.remove()
    assert sorted(rows) == [1, 9]


def test_survives_merge_and_deepcopy_and_is_applied_once():
    model = add_lora(tiny("BertForSequenceClassification"), LoraSpec(r=4, alpha=8, dropout=0.0))
    assert cut_last_layer(model) and cut_last_layer(model)
    block = cut_block(model)
    assert len(block._forward_pre_hooks) == 1
    merged = copy.deepcopy(model).merge_and_unload().eval()
    rows = last_layer_rows(merged)
    with torch.inference_mode():
        torch.testing.assert_close(merged(**batch()).logits, model.eval()(**batch()).logits)
    assert rows == [1]


@pytest.mark.parametrize(
    "head",
    ["DistilBertForSequenceClassification", "GPT2ForSequenceClassification", "BertForMaskedLM"],
)
def test_heads_that_read_other_positions_are_left_alone(head):
    if head.startswith("DistilBert"):
        config = transformers.DistilBertConfig(
            vocab_size=50, dim=32, n_layers=2, n_heads=2, hidden_dim=37
        )
    elif head.startswith("GPT2"):
        config = transformers.GPT2Config(vocab_size=50, n_embd=32, n_layer=2, n_head=2)
        config.pad_token_id = 1
    else:
        config = transformers.BertConfig(**SIZES)
    model = getattr(transformers, head)(config)
    hooks = sum(len(m._forward_pre_hooks) for m in model.modules())
    assert not cut_last_layer(model)
    assert sum(len(m._forward_pre_hooks) for m in model.modules()) == hooks


def test_uncut_restores_the_model_as_transformers_ships_it():
    model = add_lora(tiny("BertForSequenceClassification"), LoraSpec(r=4, alpha=8, dropout=0.0))
    before = {
        m: (dict(m._forward_pre_hooks), dict(m._forward_pre_hooks_with_kwargs))
        for m in model.modules()
    }
    assert not uncut_last_layer(model)
    cut_last_layer(model)
    assert uncut_last_layer(model) and not uncut_last_layer(model)
    after = {
        m: (dict(m._forward_pre_hooks), dict(m._forward_pre_hooks_with_kwargs))
        for m in model.modules()
    }
    assert after == before
    rows = last_layer_rows(model)
    with torch.inference_mode():
        model.eval()(**batch())
    assert rows == [9]
    assert cut_last_layer(model)  # and can be cut again
