"""Start-up: the codec imports only the parts of timm, torchvision and SciPy it uses, and code that
needs the rest still gets it."""

from __future__ import annotations

import subprocess
import sys


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, cwd="/")


def test_the_codec_leaves_dynamo_torchvisions_models_and_scipy_stats_out():
    proc = _run(
        "import sys, semcodec.codec.api, semcodec.models.towers\n"
        "heavy = {'torch._dynamo', 'torchvision.models.convnext', 'torchvision.ops.roi_align',\n"
        "         'timm.models.naflexvit'}\n"
        "assert not heavy & set(sys.modules), sorted(heavy & set(sys.modules))\n"
        "assert 'scipy.stats._stats_py' not in sys.modules\n"
    )
    assert proc.returncode == 0, proc.stderr.decode()


def test_what_is_left_out_still_imports_when_used():
    proc = _run(
        "import semcodec.models, torchvision, timm, scipy.stats\n"
        "assert abs(scipy.stats.norm.ppf(0.5)) < 1e-12\n"  # the real scipy.stats behind the lazy one
        "assert callable(torchvision.ops.nms) and torchvision.models.resnet18 is not None\n"
        "assert callable(timm.create_model) and timm.__version__\n"
        "from compressai.entropy_models import GaussianConditional\n"
        "assert GaussianConditional(None)._standardized_quantile(0.5) == 0\n"
    )
    assert proc.returncode == 0, proc.stderr.decode()
