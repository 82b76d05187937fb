"""The latent walked in coding order by the encoder and the decoder alike.

The context nets run in exact fixed-point integers, as ``h_s`` does (:mod:`semcodec.codec.hyperprior`), so
both ends derive the same means and stds bit for bit on any machine. :class:`LatentWalk` follows the
model's :class:`~semcodec.schedule.CodingSchedule`: for each slice (and checkerboard half) it hands
out the means and stds to code with; the caller codes or decodes that part's symbols and gives them
back, from which the walk refines the parameters of what follows.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from semcodec.codec.hyperprior import HyperpriorTables, entropy_parameters
from semcodec.models import SemanticHyperprior
from semcodec.models.integer_hyper import IntegerHyperSynthesis
from semcodec.schedule import Slice


class Timer:
    """Seconds per named stage, summed over repeats."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start


class EntropyTables(HyperpriorTables):
    """The pixel codec's tables: the hyperprior's plus its coding schedule and the integer twins of
    the context nets (and of the semantic refiner, for a model that reads the semantic layer)."""

    def __init__(self, model: SemanticHyperprior):
        super().__init__(model)
        self.schedule = model.schedule
        self.base_channels = model.base_channels
        self.slices = model.slices
        nets = model.context.nets if model.context is not None else []
        self.context = [IntegerHyperSynthesis(net, self.h_s.frac_bits).eval() for net in nets]
        spatial = model.context.spatial.nets if model.context is not None and model.context.spatial else []
        self.spatial = [IntegerHyperSynthesis(net, self.h_s.frac_bits).eval() for net in spatial]
        refiner = getattr(model, "semantic_refiner", None)  # a pixel model that reads the semantic layer
        self.semantic = IntegerHyperSynthesis(refiner, self.h_s.frac_bits).eval() if refiner is not None else None


@dataclass(frozen=True)
class Part:
    """One step of the walk: a slice, or one checkerboard half of it, with its coding parameters."""

    slice: Slice
    means: Tensor  # (1, c, h, w) float
    stds: np.ndarray  # (c, h*w) float64
    positions: np.ndarray | None  # flat bool: this half's positions; None: the whole slice

    def coded(self, mask: np.ndarray | None) -> np.ndarray | None:
        """Flat bool positions this part codes: the kept tokens (``mask``) within its positions."""
        if mask is None or self.positions is None:
            return self.positions if mask is None else mask
        return mask & self.positions


class LatentWalk:
    """The schedule walked with exact parameters: ``for part in walk.parts(): walk.give(symbols_of(part))``.

    Each slice's means and stds are the hyperprior's, refined by the channel context from the slices
    decoded before it; with a checkerboard, the second half's are refined from the decoded anchors.
    ``give`` takes the part's symbols (C, h*w; zero where not coded). After the walk, ``y_hat``
    (1, C, h, w) and ``symbols`` (C, h*w) hold the result; a ``base_only`` walk fills the
    enhancement channels with the hyperprior's means (symbols zero).
    ``scale_table``: stds rounded up to the scale table (format version 1).
    """

    def __init__(
        self, tables: EntropyTables, means_fixed: Tensor, scales_fixed: Tensor, timer: Timer, scale_table: bool = False
    ):
        self.tables, self.timer, self.scale_table = tables, timer, scale_table
        self.means_fixed, self.scales_fixed = means_fixed, scales_fixed
        self._given: np.ndarray | None = None
        self.y_hat: Tensor | None = None
        self.symbols: np.ndarray | None = None

    def give(self, symbols: np.ndarray) -> None:
        self._given = symbols

    def _take(self) -> np.ndarray:
        if self._given is None:
            raise RuntimeError("LatentWalk: give() the part's symbols before asking for the next part")
        symbols, self._given = self._given, None
        return symbols

    def parts(self, base_only: bool = False) -> Iterator[Part]:
        tables, schedule = self.tables, self.tables.schedule
        decoded_fixed: list[Tensor] = []
        y_hat, symbols = [], []
        for part in schedule.coded(base_only):
            means_k, scales_k = self._slice_parameters(part, decoded_fixed)
            with self.timer("hyper"):
                means, stds = entropy_parameters(tables, means_k, scales_k, self.scale_table)
            if not schedule.checkerboard:
                yield Part(part, means, stds, None)
                slice_symbols = self._take()
            else:
                anchors = schedule.anchors(means.shape[2], means.shape[3])
                flat = anchors.reshape(-1).numpy()
                yield Part(part, means, stds, flat)
                first = self._take()
                with self.timer("hyper"), torch.inference_mode():
                    anchor_fixed = torch.from_numpy(first).reshape(means.shape).double() * tables.one + means_k
                    visible = torch.where(anchors, anchor_fixed, torch.zeros((), dtype=torch.float64))
                    refinement = tables.spatial[part.index].forward_parts([means_k, scales_k, visible])
                    d_mean, d_scale = refinement.chunk(2, dim=1)
                    means_k = torch.where(anchors, means_k, means_k + d_mean)
                    scales_k = torch.where(anchors, scales_k, scales_k + d_scale)
                    means, stds = entropy_parameters(tables, means_k, scales_k, self.scale_table)
                yield Part(part, means, stds, ~flat)
                slice_symbols = np.where(flat, first, self._take())
            residual = torch.from_numpy(slice_symbols).reshape(means.shape)
            decoded_fixed.append((residual.double() * tables.one + means_k).float())  # exact: |value| < 2**22
            y_hat.append(residual.float() + means)
            symbols.append(slice_symbols)
        uncoded = schedule.uncoded_from(base_only)
        if uncoded is not None:
            means = entropy_parameters(tables, self.means_fixed[:, uncoded:], self.scales_fixed[:, uncoded:])[0]
            y_hat.append(means)
            symbols.append(np.zeros((means.shape[1], means.shape[2] * means.shape[3]), dtype=np.int32))
        self.y_hat, self.symbols = torch.cat(y_hat, dim=1), np.concatenate(symbols)

    def _slice_parameters(self, part: Slice, decoded_fixed: list[Tensor]) -> tuple[Tensor, Tensor]:
        """Fixed-point ``(means, scales)`` of a slice: the hyperprior's, refined by the channel context."""
        with self.timer("hyper"):
            means_k = self.means_fixed[:, part.start : part.end]
            scales_k = self.scales_fixed[:, part.start : part.end]
            if part.index and self.tables.context:
                with torch.inference_mode():
                    net = self.tables.context[part.index - 1]
                    refinement = net.forward_parts([means_k, scales_k, *decoded_fixed])
                d_mean, d_scale = refinement.chunk(2, dim=1)
                means_k, scales_k = means_k + d_mean, scales_k + d_scale
        return means_k, scales_k
