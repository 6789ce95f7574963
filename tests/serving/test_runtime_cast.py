"""The exact form's linear weights stored in bf16 once: the same outputs as autocast's casts."""

from __future__ import annotations

import torch
from transformers import BertConfig, BertForSequenceClassification

from tasks.core.serving.runtime import cast_linears


def test_linears_cast_once_give_bit_identical_autocast_outputs():
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=48, max_position_embeddings=32, num_labels=2,
    )  # fmt: skip
    model = BertForSequenceClassification(config).eval()
    ids = torch.randint(1, 64, (3, 9))
    mask = torch.ones_like(ids)
    mask[0, 6:] = 0  # padded like a served batch
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        before = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    cast_linears(model, torch.bfloat16)
    assert model.classifier.weight.dtype == torch.bfloat16
    assert model.bert.embeddings.LayerNorm.weight.dtype == torch.float32  # kept as autocast does
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        after = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    assert torch.equal(before.logits, after.logits)
    assert torch.equal(before.hidden_states[-1], after.hidden_states[-1])
    cast_linears(model, None)  # fp32 precision: nothing changes
    assert model.classifier.weight.dtype == torch.bfloat16
