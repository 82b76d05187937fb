"""The semantic layer's map <-> symbols <-> bytes: the tower's map coded at the encoder.

Same entropy coding as the pixel codec's latent: z against the frozen integer CDFs, y against exact
fixed-point means and stds from the integer twin of ``h_s`` (:mod:`semcodec.codec.latent_walk`), so
the symbols are bit for bit the same on any machine. The decoder's map (and the tower tail's
tokens after it) is float32.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from semcodec import bitstream
from semcodec.codec import entropy
from semcodec.codec.latent_walk import HyperpriorTables, entropy_parameters, hyper_fixed, residuals, z_symbols
from semcodec.errors import BitstreamError
from semcodec.models.semantic_layer import SemanticLayer


class SemanticLayerCoder:
    """Codes a tower map with one trained :class:`SemanticLayer` (``layer_id``, ``weights_hash``)."""

    def __init__(self, layer: SemanticLayer, layer_id: str, weights_hash: bytes):
        self.layer = layer.eval()
        self.layer_id, self.weights_hash = layer_id, weights_hash
        self.tables = HyperpriorTables(layer)
        cfg = layer.config
        self.z_shape = (1, cfg.hyper_channels, cfg.hyper_grid, cfg.hyper_grid)
        self.y_grid = cfg.latent_grid

    def encode(self, features: Tensor, gain_index: int) -> bytes:
        """A semantic chunk's payload for one map (1, C, h, w)."""
        with torch.inference_mode():
            y = self.layer.analysis(features, gain_index)
            z_syms = z_symbols(self.layer.h_a(y), self.tables)
            means, stds = self.parameters(z_syms)
            symbols = residuals(y, means)
        y_coded = entropy.encode_gaussian(symbols, stds)
        payload = bitstream.SemanticPayload(
            self.layer_id,
            self.weights_hash,
            gain_index,
            entropy.symbols_crc32(z_syms, symbols),
            entropy.encode_factorized(z_syms, self.tables.pmfs),
            y_coded,
        )
        return bitstream.pack_semantic(payload)

    def decode(self, payload: bitstream.SemanticPayload) -> Tensor:
        """The rebuilt map (1, C, h, w) of a semantic chunk."""
        if not 0 <= payload.gain_index < self.layer.config.num_qualities:
            raise BitstreamError(f"corrupt bitstream: semantic layer gain index {payload.gain_index}")
        g = self.y_grid
        z_syms = entropy.decode_factorized(payload.z, self.tables.pmfs, self.z_shape[2] * self.z_shape[3])
        means, stds = self.parameters(z_syms)
        symbols = entropy.decode_gaussian(payload.y, stds).reshape(means.shape[1], -1)
        if entropy.symbols_crc32(z_syms, symbols) != payload.crc:
            raise BitstreamError(
                "decoded semantic-layer symbols fail their CRC: the file is corrupt or the semantic layer "
                "here differs from the encoder's"
            )
        with torch.inference_mode():
            y_hat = torch.from_numpy(symbols.astype(np.float32)).reshape(1, -1, g, g) + means
            return self.layer.synthesis(y_hat, payload.gain_index)

    def parameters(self, z_syms: np.ndarray) -> tuple[Tensor, np.ndarray]:
        """Float means (1, M, g, g) and coding stds (M, g*g), exact at both ends."""
        g = self.y_grid
        means_fixed, scales_fixed = hyper_fixed(self.tables, z_syms, self.z_shape)
        return entropy_parameters(self.tables, means_fixed[:, :, :g, :g], scales_fixed[:, :, :g, :g].contiguous())
