"""Where training runs and in what precision: CUDA when there is one, bfloat16 only where it is native,
the compiled pass equal to the eager one."""

from __future__ import annotations

import pytest


def test_auto_device_falls_back_to_cpu_without_cuda(monkeypatch):
    import torch

    from semcodec.training.device import pick_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device("auto") == torch.device("cpu")


def test_bfloat16_transforms_keep_the_rate_in_float32():
    import torch

    from semcodec.models import SemanticHyperprior, SemanticHyperpriorConfig
    from semcodec.training.config import TINY_ARCH
    from semcodec.training.train import rd_loss

    torch.manual_seed(0)
    model = SemanticHyperprior(SemanticHyperpriorConfig(**TINY_ARCH)).train()
    x, quality = torch.rand(2, 3, 64, 64), torch.tensor([0, 1])
    losses = {}
    for dtype in (None, torch.bfloat16):
        torch.manual_seed(1)  # the same noise on y and z
        out = model(x, quality, transform_dtype=dtype)
        assert out["x_hat"].dtype == out["likelihoods"]["y"].dtype == out["means"].dtype == torch.float32
        losses[dtype] = rd_loss(out, x, torch.tensor([0.01, 0.01]))
    assert losses[torch.bfloat16]["bpp"].item() == pytest.approx(losses[None]["bpp"].item(), rel=0.05)
    assert losses[torch.bfloat16]["psnr"].item() == pytest.approx(losses[None]["psnr"].item(), abs=0.3)


def test_explicit_precisions_are_obeyed_and_unknown_ones_refused():
    import torch

    from semcodec.training.device import transform_dtype

    for device in (torch.device("cpu"), torch.device("cuda")):
        assert transform_dtype("float32", device) is None
        assert transform_dtype("bfloat16", device) is torch.bfloat16
    for bad in ("float16", "fp32", "bf16", "BFLOAT16", ""):
        with pytest.raises(ValueError, match="precision must be auto, float32 or bfloat16, not"):
            transform_dtype(bad, torch.device("cpu"))


def test_auto_precision_is_bfloat16_only_on_a_cpu_with_bfloat16_instructions(monkeypatch):
    """Emulated bfloat16 is slower than float32, so ``auto`` picks it only where the CPU has it natively."""
    import torch

    from semcodec.training import device

    for native, expected in ((True, torch.bfloat16), (False, None)):
        monkeypatch.setattr(device, "native_bfloat16_cpu", lambda n=native: n)
        assert device.transform_dtype("auto", torch.device("cpu")) is expected


def test_auto_precision_on_cuda_follows_the_gpu_s_bfloat16_support(monkeypatch):
    import torch

    from semcodec.training.device import transform_dtype

    for supported, expected in ((True, torch.bfloat16), (False, None)):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, s=supported, **kwargs: s)
        assert transform_dtype("auto", torch.device("cuda")) is expected


def test_compiled_training_pass_computes_the_eager_losses_and_gradients():
    import torch
    import torch._inductor.config as inductor_config

    from semcodec.models import SemanticHyperprior, SemanticHyperpriorConfig
    from semcodec.training.config import TINY_ARCH
    from semcodec.training.train import rd_loss, training_passes

    torch.manual_seed(0)
    model = SemanticHyperprior(SemanticHyperpriorConfig(**TINY_ARCH)).train()
    x, quality, lambdas = torch.rand(2, 3, 64, 64), torch.tensor([0, 1]), torch.tensor([0.01, 0.02])
    results = []
    with inductor_config.patch(fallback_random=True):  # the eager noise stream, to compare like with like
        for compiled in (False, True):
            forward, _ = training_passes(model, compiled)
            assert (forward is model) is not compiled
            torch.manual_seed(1)
            losses = rd_loss(forward(x, quality), x, lambdas)
            model.zero_grad()
            losses["loss"].backward()
            grad = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
            results.append((losses["loss"].item(), losses["bpp"].item(), grad))
    (eager_loss, eager_bpp, eager_grad), (loss, bpp, grad) = results
    assert loss == pytest.approx(eager_loss, rel=1e-4) and bpp == pytest.approx(eager_bpp, rel=1e-4)
    assert torch.nn.functional.cosine_similarity(grad, eager_grad, dim=0) > 0.9999
