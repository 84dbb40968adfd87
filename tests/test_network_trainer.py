"""The network trainer with a batch source that is not a render pool: tensors in memory."""

import json
from dataclasses import dataclass, field

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from distill3d.errors import NonFiniteLoss
from distill3d.optim import OptimConfig
from distill3d.training.network_trainer import RunOptions, TensorBatches, run_training

TRUE_WEIGHT = torch.tensor([[2.0, -1.0, 0.5]])


@dataclass
class RegressionConfig:
    kind: str = "test-regression"
    steps: int = 200
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(batch_size=16, lr=0.05, warmup_steps=1,
                                                                   ema_decay=0.9))


class RegressionTask:
    """y = x W^T + noise, fitted by a linear layer; the data are fixed tensors (``TensorBatches``)."""

    export_dtype = torch.float32

    def __init__(self, config: RegressionConfig, poison_at: int = -1):
        self.config, self.calls, self.poison_at = config, 0, poison_at  # poison_at: a call whose loss is NaN
        x = torch.randn(256, 3, generator=torch.Generator().manual_seed(0))
        self.data = {"x": x, "y": x @ TRUE_WEIGHT.T}

    def build_model(self) -> nn.Module:
        return nn.Linear(3, 1, bias=False)

    def build_source(self, device: torch.device) -> TensorBatches:
        return TensorBatches(self.data, device)

    def loss(self, model, source: TensorBatches, batch_size: int, generators) -> torch.Tensor:
        batch = source.sample(batch_size, generators.data)
        loss = (model(batch["x"]) - batch["y"]).square().mean()
        self.calls += 1
        return loss * float("nan") if self.calls == self.poison_at else loss


def test_any_batch_source_trains_and_resumes_to_the_same_weights(tmp_path):
    summary = run_training(RegressionTask(RegressionConfig()), RunOptions(out=tmp_path / "a", progress=False,
                                                                          method="test", log_every=20))
    assert summary["finished"] and summary["step"] == 200
    weights = load_file(str(tmp_path / "a" / "model.safetensors"))["weight"]
    assert torch.allclose(weights, TRUE_WEIGHT, atol=1e-2), weights
    assert json.loads((tmp_path / "a" / "config.json").read_text())["method"] == "test"

    run_training(RegressionTask(RegressionConfig(steps=80)), RunOptions(out=tmp_path / "b", progress=False))
    run_training(RegressionTask(RegressionConfig()), RunOptions(out=tmp_path / "b", resume=True, progress=False))
    assert torch.equal(load_file(str(tmp_path / "b" / "model.safetensors"))["weight"], weights)


def test_a_non_finite_loss_stops_before_saving(tmp_path):
    out = tmp_path / "run"
    run_training(RegressionTask(RegressionConfig(steps=40)), RunOptions(out=out, progress=False, log_every=20))
    saved = load_file(str(out / "model.safetensors"))["weight"].clone()
    with pytest.raises(NonFiniteLoss, match="--init-from"):
        run_training(RegressionTask(RegressionConfig(steps=100), poison_at=5),
                     RunOptions(out=out, resume=True, progress=False, log_every=20))
    assert torch.equal(load_file(str(out / "model.safetensors"))["weight"], saved)
