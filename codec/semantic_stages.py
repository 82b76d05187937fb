"""The codec's semantic-layer stages: the encoder's chunk (and the latent its decoder gets), the
decoder's tokens from it, and the latent a pixel model that reads the layer conditions on.
:class:`~semcodec.codec.api.Codec` codes with them."""

from __future__ import annotations

import torch

from semcodec import bitstream
from semcodec.codec.assets import CodecAssets
from semcodec.codec.defaults import SEMANTIC_FIT_STEPS, SEMANTIC_REACH
from semcodec.codec.image_io import ImageInput, LoadedImage, load_image
from semcodec.codec.semantic_layer import KeptTokensFit
from semcodec.codec.semantic_tokens import keeps_answer, kept_tokens, token_importance, tower_geometry
from semcodec.codec.stages import bytes_through
from semcodec.codec.tensors import tower_input
from semcodec.codec.token_file import TokenOutput, token_metadata
from semcodec.errors import BitstreamError, InputError, WeightsError
from semcodec.weights import ModelEntry, SemanticLayerEntry


class SemanticLayerStages(CodecAssets):
    """What :class:`~semcodec.codec.api.Codec` does with semantic layers (it supplies ``_decoder_for``)."""

    def _semantic_chunk(
        self, space: str, quality: int, image: LoadedImage, keep_tokens: int | None
    ) -> tuple[bytes, torch.Tensor]:
        """The semantic layer's chunk: the tower's map of ``image`` (at its own shape) after its split
        block, coded; with ``keep_tokens``, only for the tokens the machine gets. And the latent its
        decoder gets (what a pixel model that reads the layer conditions on)."""
        layer = self.registry.semantic_layer_for(space)
        coder = self.semantic_coder(layer.name)
        gains = layer.encoder_gains_for(quality)
        if not gains:
            raise WeightsError(f"semantic layer {layer.name} has no gain for quality {quality}")
        tower = self.encoding_tower(space, sha256=layer.tower_sha256)
        tower.set_split(layer.split_block)
        shape = tower_geometry(image.height, image.width, tower.input_size, 2 * tower.split_stride)
        kept, fit, gain = None, None, gains[-1]
        with torch.inference_mode():
            features = tower.features(tower.prepare(tower_input(image.pixels, shape), shape))
            if keep_tokens is None and len(gains) > 1 and tower.classifier is not None:
                return coder.encode_first_accepted(features, gains, keeps_answer(tower, features))
            if keep_tokens is not None:
                tokens = tower.tail(features)[0]
                if not 1 <= keep_tokens <= len(tokens):
                    raise InputError(
                        f"keep_tokens={keep_tokens}: the {space} tower gives this image 1..{len(tokens)} tokens"
                    )
                kept = kept_tokens(token_importance(tokens, tower.classifier), keep_tokens)
                fit = KeptTokensFit(tower.tail, tokens.clone(), SEMANTIC_FIT_STEPS)
        features = features.clone()  # out of inference mode: the fit runs autograd through it
        return coder.encode_latent(features, gain, kept, SEMANTIC_REACH, fit=fit)

    def semantic_latent(self, image: ImageInput, quality: int | None = None) -> torch.Tensor:
        """The decoded semantic latent (1, M, h, w) a default file of ``image`` carries: what a pixel
        model that reads the semantic layer conditions on (its training pairs photos with this)."""
        space = self.registry.default_token_space
        if space is None:
            raise WeightsError("these weights write no semantic layer by default")
        quality = self.default_quality if quality is None else quality
        return self._semantic_chunk(space, quality, load_image(image, max_pixels=self.max_pixels), None)[1]

    def _conditioning_latent(self, header: bitstream.Header, entry: ModelEntry) -> torch.Tensor:
        """The decoded semantic latent a file's pixel model reads: its semantic chunk, which must be
        of the layer the model was trained with."""
        condition = entry.semantic_condition
        payload = header.find(bitstream.SEMANTIC_CHUNK)
        if payload is None:
            raise BitstreamError(f"corrupt bitstream: model {entry.name} reads a semantic layer the file lacks")
        chunk = bitstream.unpack_semantic(payload, header.version)
        if chunk.layer_id != condition.layer or chunk.weights_hash != condition.layer_hash:
            raise BitstreamError(
                f"corrupt bitstream: model {entry.name} reads semantic layer {condition.layer}, "
                f"the file carries {chunk.layer_id}"
            )
        self.registry.decoding_semantic_layer(chunk.layer_id, chunk.weights_hash)
        return self.semantic_coder(chunk.layer_id).decoded_latent(chunk)

    def _semantic_layer_of(self, header: bitstream.Header, chunk: bitstream.SemanticPayload) -> SemanticLayerEntry:
        """The installed semantic layer a file's chunk names (with the weights that wrote it)."""
        self._decoder_for(header)  # the size limit and the pixel model, checked as for any decode
        return self.registry.decoding_semantic_layer(chunk.layer_id, chunk.weights_hash)

    def _semantic_tokens(
        self, header: bitstream.Header, layer: SemanticLayerEntry, chunk: bitstream.SemanticPayload
    ) -> TokenOutput:
        """Tokens from the semantic layer: the tower's map rebuilt, then the tower's own tail (only
        the kept tokens, with their positions, when the encoder kept some)."""
        coder = self.semantic_coder(layer.name)
        tower = self.tower(layer.tower, sha256=layer.tower_sha256)
        tower.set_split(layer.split_block)
        features = coder.decode(chunk)
        positions = None
        with torch.inference_mode():
            tokens = tower.tail(features)[0]
            if chunk.kept is not None:
                positions = torch.tensor(chunk.kept, dtype=torch.int64)
                tokens = tokens[positions]
        grid = chunk.token_grid
        source = {"tower": layer.tower, "layer": tower.layer, "tower_sha256": layer.tower_sha256}
        read = header.header_bytes + bytes_through(header, bitstream.SEMANTIC_CHUNK)
        kept = len(chunk.kept) if chunk.kept is not None else None
        extra = {"semantic_layer": layer.name}
        metadata = token_metadata(header, tokens, layer.tower, source, grid, read, "semantic", extra, kept)
        return TokenOutput(tokens.contiguous(), metadata, positions)
