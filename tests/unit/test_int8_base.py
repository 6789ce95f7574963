"""int8 matmuls through the frozen base (``precision: int8``): close to fp32 in both
directions, a token's forward independent of its neighbours, LoRA and head left fp32."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tasks.core.config.train import LoraSpec
from tasks.core.training import int8_base
from tasks.core.training.modeling import add_lora

pytestmark = pytest.mark.skipif(
    not int8_base.available(), reason="no x86 quantized engine in this PyTorch"
)


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().norm() / b.detach().norm())


def pair(inputs: int = 48, outputs: int = 40) -> tuple[nn.Linear, nn.Linear]:
    torch.manual_seed(0)
    exact = nn.Linear(inputs, outputs).requires_grad_(False)
    converted = nn.Linear(inputs, outputs).requires_grad_(False)
    converted.load_state_dict(exact.state_dict())
    int8_base.convert(converted)
    return exact, converted


def activations(rows: int = 12, width: int = 48) -> torch.Tensor:
    """Rows of different ranges, all-positive ones and a 14x outlier channel (as MiniLM's
    feed-forward inputs have)."""
    x = torch.randn(2, rows // 2, width) * torch.linspace(0.2, 3.0, width)
    x[0, 0] = x[0, 0].abs() + 0.5
    x[..., 7] *= 14
    return x


def test_forward_and_input_gradient_are_close_to_fp32():
    exact, converted = pair()
    x = activations().requires_grad_()
    y, y_exact = converted(x), exact(x)
    assert y.shape == y_exact.shape and relative(y, y_exact) < 0.03
    grad = torch.randn_like(y)
    (dx,) = torch.autograd.grad(y, x, grad)
    (dx_exact,) = torch.autograd.grad(y_exact, x, grad)
    assert relative(dx, dx_exact) < 0.03
    assert relative(y, y_exact) > 0  # it did run in int8, not fall back to fp32


@pytest.mark.parametrize("rows", [1, 2, 5])
def test_a_rows_forward_and_gradient_do_not_depend_on_its_neighbours(rows):
    """Bit-identical beside a 1000x neighbour: fbgemm takes one range per tensor and MKL
    rounds a lone row's GEMM differently (an Intel CPU moved it by 1 ulp where an AMD one
    did not), so neither may reach a row's result."""
    _, converted = pair()
    x = activations()
    mine = x[:1, :1].clone().requires_grad_()
    others = 1000 * x[1:, :rows].reshape(1, -1, x.shape[-1])
    alone = converted(mine)
    beside = converted(torch.cat([mine, others], dim=1))
    assert torch.equal(alone[0, 0], beside[0, 0])
    grad = torch.randn(alone.shape[-1])
    (dx_alone,) = torch.autograd.grad(alone[0, 0] @ grad, mine)
    (dx_beside,) = torch.autograd.grad(beside[0, 0] @ grad + 1000 * beside[0, 1:].sum(), mine)
    assert torch.equal(dx_alone, dx_beside)


def test_only_frozen_linears_are_converted_and_the_model_stays_as_stored():
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=37, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    exact = add_lora(BertForSequenceClassification(config), LoraSpec(r=4, dropout=0.0))
    converted = add_lora(BertForSequenceClassification(config), LoraSpec(r=4, dropout=0.0))
    for name, param in exact.named_parameters():
        if "lora_B" in name:  # as after some steps (PEFT starts B at zero: no gradient to A)
            param.data.normal_(0, 0.1)
    converted.load_state_dict(exact.state_dict())
    keys = set(converted.state_dict())
    # 2 layers x (query, key, value, attention output, intermediate, output), the pooler and
    # the frozen original of the head that PEFT keeps beside its trainable copy
    assert int8_base.frozen_linears_to_int8(converted) == 14
    assert set(converted.state_dict()) == keys  # nothing extra saved, no layer renamed
    assert all(type(m) is nn.Linear for n, m in converted.named_modules() if n.endswith("dense"))
    trainable = [
        m for m in converted.modules() if isinstance(m, nn.Linear) and m.weight.requires_grad
    ]
    assert len(trainable) == 2 * 2 * 2 + 1  # LoRA A and B on query and value, 2 layers; head
    assert not any(hasattr(m, "_loraflow_int8") for m in trainable)

    batch = {"input_ids": torch.randint(0, 30, (6, 9)), "labels": torch.tensor([0, 1] * 3)}
    for model in (exact, converted):
        model.train()
        model(**batch).loss.backward()
    grads = {n: p.grad for n, p in exact.named_parameters() if p.requires_grad}
    for name, param in converted.named_parameters():
        if param.requires_grad:  # LoRA and head: fp32, their gradients along fp32's
            assert param.dtype == torch.float32 and param.grad.dtype == torch.float32
            grad, reference = param.grad.flatten(), grads[name].flatten()
            cosine = float(nn.functional.cosine_similarity(grad, reference, 0))
            assert cosine > 0.97, (name, cosine)
