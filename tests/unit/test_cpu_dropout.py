"""The CPU dropout: nn.Dropout's distribution and gradients from a cheaper random source."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tasks.core.training.cpu_dropout import CpuDropout, keep_mask, use_cpu_dropout


@pytest.mark.parametrize("p", [0.05, 0.1, 0.5, 0.9])
def test_keep_rate_and_scale_match_nn_dropout(p):
    torch.manual_seed(0)
    x = torch.ones(400, 1000)
    y = CpuDropout(p).train()(x)
    kept = y != 0
    assert kept.float().mean().item() == pytest.approx(1 - p, abs=3e-3)
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / (1 - p)))
    assert y.mean().item() == pytest.approx(1.0, abs=0.02)  # unbiased, as nn.Dropout


def test_masks_are_independent_across_positions_and_calls():
    torch.manual_seed(0)
    a = keep_mask(torch.Size([1000, 1000]), 0.5, torch.device("cpu")).float()
    b = keep_mask(torch.Size([1000, 1000]), 0.5, torch.device("cpu")).float()
    assert abs(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1]) < 0.01
    # neighbours come from the same 64-bit draw: still uncorrelated
    pairs = a.flatten().view(-1, 4)
    assert abs(torch.corrcoef(pairs[:, :2].T)[0, 1]) < 0.01
    assert abs(torch.corrcoef(pairs[:, 2:].T)[0, 1]) < 0.01


def test_backward_uses_the_forward_mask():
    torch.manual_seed(1)
    x = torch.randn(64, 33, requires_grad=True)
    y = CpuDropout(0.3).train()(x)
    y.sum().backward()
    expected = (y != 0).float() / 0.7
    torch.testing.assert_close(x.grad, expected)


def test_eval_mode_zero_p_and_seeding():
    x = torch.randn(8, 16)
    module = CpuDropout(0.2)
    assert torch.equal(module.eval()(x), x)
    assert torch.equal(CpuDropout(0.0).train()(x), x)
    module.train()
    torch.manual_seed(7)
    first = module(x)
    torch.manual_seed(7)
    assert torch.equal(module(x), first)  # same seed, same masks: runs stay reproducible


def test_inplace_variant_matches():
    torch.manual_seed(3)
    x = torch.ones(100, 100)
    y = CpuDropout(0.25, inplace=True).train()(x)
    assert y is x and (y != 0).float().mean().item() == pytest.approx(0.75, abs=0.02)


def test_swap_replaces_every_plain_dropout_and_keeps_the_state_dict():
    from peft import LoraConfig, get_peft_model
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=30, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=20, max_position_embeddings=32,
    )  # fmt: skip
    model = get_peft_model(
        BertForSequenceClassification(config),
        LoraConfig(r=2, target_modules=["query", "value"], lora_dropout=0.1, task_type="SEQ_CLS"),
    )
    before = {k: v.clone() for k, v in model.state_dict().items()}
    plain = sum(type(m) is nn.Dropout for m in model.modules())
    assert use_cpu_dropout(model) == plain > 4  # embeddings, layers, LoRA branches, head
    assert not any(type(m) is nn.Dropout for m in model.modules())
    after = model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)
    model.train()
    out = model(input_ids=torch.tensor([[2, 5, 6, 3]]), labels=torch.tensor([1]))
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
