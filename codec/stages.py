"""The encoder's and decoder's stages between the model and the container: the refinement asked
for, the side information, the pruned file's mask, the latent walk coding and decoding each part,
and the container's chunks (:mod:`semcodec.bitstream.layout`). :class:`~semcodec.codec.api.Codec`
runs them in order."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from semcodec import bitstream
from semcodec.codec import entropy
from semcodec.codec.defaults import DEFAULT_REFINE_STEPS
from semcodec.codec.hyperprior import entropy_parameters, hyper_fixed, residuals, z_symbols
from semcodec.codec.latent_walk import (
    EntropyTables,
    LatentWalk,
    Part,
    Timer,
)
from semcodec.codec.refine import RefineConfig
from semcodec.codec.semantic_condition import condition_fixed, on_latent_grid, semantic_fixed
from semcodec.codec.token_choice import important_tokens, latent_energy, symbol_energy
from semcodec.errors import BitstreamError
from semcodec.models import SemanticHyperprior
from semcodec.weights import ModelEntry

if TYPE_CHECKING:
    from semcodec.codec.api import Symbols


@dataclass
class SideInformation:
    """z as coded, and the fixed-point ``(means, scales)`` both ends derive from it."""

    symbols: np.ndarray
    coded: bytes
    means_fixed: torch.Tensor
    scales_fixed: torch.Tensor


@contextmanager
def one_thread() -> Iterator[None]:
    """``h_a`` runs single-threaded so an encoder's z symbols never depend on its thread count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# ------------------------------------------------------------------- encoder stages
def refinement_for(refine: RefineConfig | None, size: tuple[int, int], notes: list[str]) -> RefineConfig | None:
    """The refinement this encode runs (``None``: none), the shared default when not asked."""
    refine = RefineConfig(steps=DEFAULT_REFINE_STEPS) if refine is None else refine
    if refine.steps <= 0:
        return None
    h, w = size
    if h * w > refine.max_pixels:
        notes.append(
            f"not refined: {w}x{h} is above the {refine.max_pixels / 1e6:.1f} MP limit of encoder refinement "
            "(its memory and time grow with the image); coded without refinement"
        )
        return None
    return refine


def side_information(
    model: SemanticHyperprior, tables: EntropyTables, y: torch.Tensor, timer: Timer
) -> SideInformation:
    """z coded; the fixed-point parameters from the encoder's own *decoded* z, as the decoder's."""
    with timer("hyper"):
        with one_thread():
            z = model.h_a(y)
        symbols = z_symbols(z, tables)
    with timer("entropy"):
        coded = entropy.encode_factorized(symbols, tables.pmfs)
    with timer("hyper"):
        means_fixed, scales_fixed = hyper_fixed(tables, symbols, z.shape)
    return SideInformation(symbols, coded, means_fixed, scales_fixed)


def conditioned_side(
    tables: EntropyTables, side: SideInformation, semantic_latent: torch.Tensor, photo: tuple[int, int], stride: int
) -> SideInformation:
    """``side`` with its fixed-point parameters refined from the decoded semantic latent (a model
    that reads the semantic layer, :mod:`semcodec.codec.semantic_condition`): exact at both ends."""
    grid = tuple(side.means_fixed.shape[2:])
    semantic = semantic_fixed(on_latent_grid(semantic_latent, photo, grid, stride), tables)
    means, scales = condition_fixed(tables.semantic, side.means_fixed, side.scales_fixed, semantic)
    return SideInformation(side.symbols, side.coded, means, scales)


def choose_tokens(model: SemanticHyperprior, y: torch.Tensor, size: tuple[int, int], keep: int) -> torch.Tensor:
    """A refining encoder's kept tokens (h, w), fixed from the unrefined latent by the float ranking."""
    with torch.no_grad():  # not inference mode: the mask takes part in the refinement's autograd
        means, scales = model.decoded_hyper(y)
        energy = latent_energy(model, y, means, scales)
        return important_tokens(energy, torch.tensor([keep]), size, model.latent_stride)[0]


def pruned_mask(
    model: SemanticHyperprior,
    tables: EntropyTables,
    side: SideInformation,
    y: torch.Tensor,
    size: tuple[int, int],
    keep_tokens: int | None,
    chosen: torch.Tensor | None,
    timer: Timer,
) -> np.ndarray | None:
    """Flat bool mask of the tokens a pruned file codes (``None``: all): ``chosen`` by a refining
    encoder, else ranked on the hyperprior's exact parameters."""
    if chosen is not None:
        return chosen.reshape(-1).numpy()
    if keep_tokens is None:
        return None
    with timer("hyper"):
        means, stds = entropy_parameters(tables, side.means_fixed, side.scales_fixed)
        grid = tuple(means.shape[2:])
        energy = symbol_energy(residuals(y, means), stds, grid)
        return important_tokens(energy, torch.tensor([keep_tokens]), size, model.latent_stride)[0].reshape(-1).numpy()


def coded_tokens(pruned: np.ndarray | None, content: np.ndarray | None) -> np.ndarray | None:
    """Flat bool mask of the tokens a file codes (``None``: all): a pruned file's kept tokens, and
    (format version 3 on) never those wholly in the padding (:func:`content_tokens`)."""
    if content is None:
        return pruned
    return content if pruned is None else pruned & content


def code_latent(
    tables: EntropyTables, side: SideInformation, y: torch.Tensor, mask: np.ndarray | None, timer: Timer
) -> tuple[np.ndarray, bytes, bytes]:
    """The latent's symbols (C, h*w) and its two layers, coded along the schedule."""
    layers = (entropy.GaussianEncoder(), entropy.GaussianEncoder())
    cb = tables.base_channels
    walk = LatentWalk(tables, side.means_fixed, side.scales_fixed, timer)
    for part in walk.parts():
        walk.give(encode_part(part, y, layers[part.slice.end > cb], mask, timer))
    with timer("entropy"):
        base = bitstream.pack_base(cb, entropy.symbols_crc32(walk.symbols[:cb]), layers[0].data())
        enhancement = layers[1].data()
    return walk.symbols, base, enhancement


def encode_part(
    part: Part, y: torch.Tensor, layer: entropy.GaussianEncoder, mask: np.ndarray | None, timer: Timer
) -> np.ndarray:
    """Code one part's symbols; returns them (zero where not coded: the decoder uses the mean)."""
    symbols = residuals(y[:, part.slice.start : part.slice.end], part.means)
    coded = part.coded(mask)
    if coded is not None:
        symbols[:, ~coded] = 0
    with timer("entropy"):
        layer.encode(*((symbols, part.stds) if coded is None else (symbols[:, coded], part.stds[:, coded])))
    return symbols


def pack_file(
    entry: ModelEntry,
    quality: int,
    size: tuple[int, int],
    symbols: Symbols,
    z_coded: bytes,
    mask: np.ndarray | None,
    space: str,
    base: bytes,
    enhancement: bytes,
    semantic: bytes | None = None,
) -> bytes:
    """The container: header, then the chunks in :mod:`semcodec.bitstream.layout`'s order, in this
    build's format version (a tiled file's ``Z``, ``YB`` and ``YE`` already hold one stream a tile)."""
    first, optional = [], []
    if mask is not None:
        optional.append(bitstream.Chunk(bitstream.MASK_CHUNK, entropy.encode_mask(mask)))
    if semantic is not None:  # what a tokens decoder reads comes first; its layer names the tower, so
        # no TSPC repeats it (files of 2.0.0-3.1.0 did: 30 bytes; every reader serves SEM's tower without)
        first = [bitstream.Chunk(bitstream.SEMANTIC_CHUNK, semantic)]
    elif space != entry.token_space:  # the latent space is recorded by omission
        optional.append(bitstream.Chunk(bitstream.TOKEN_SPACE_CHUNK, space.encode()))
    header = bitstream.Header(
        version=bitstream.FORMAT_VERSION,
        model_id=entry.name,
        weights_hash=entry.short_hash,
        quality=quality,
        height=size[0],
        width=size[1],
        symbols_crc=symbols.crc32(),
        chunks=(
            *first,
            bitstream.Chunk(bitstream.Z_CHUNK, z_coded),
            *optional,
            bitstream.Chunk(bitstream.BASE_CHUNK, base),
            bitstream.Chunk(bitstream.ENHANCEMENT_CHUNK, enhancement),
        ),
    )
    return bitstream.pack(header)


# ------------------------------------------------------------------- decoder stages
def bytes_through(header: bitstream.Header, tag: str) -> int:
    """Payload bytes of the chunks up to and including ``tag``: what a decoder that stops there reads."""
    total = 0
    for chunk in header.chunks:
        total += len(chunk.payload)
        if chunk.tag == tag:
            break
    return total


def decode_side_information(
    model: SemanticHyperprior, tables: EntropyTables, header: bitstream.Header, timer: Timer
) -> SideInformation:
    s = model.downsampling
    hp, wp = -(-header.height // s) * s, -(-header.width // s) * s
    z_shape = (1, len(tables.pmfs), hp // s, wp // s)
    coded = header.chunk(bitstream.Z_CHUNK)
    with timer("entropy"):
        symbols = entropy.decode_factorized(coded, tables.pmfs, z_shape[2] * z_shape[3])
    with timer("hyper"):
        means_fixed, scales_fixed = hyper_fixed(tables, symbols, z_shape)
    return SideInformation(symbols, coded, means_fixed, scales_fixed)


def token_mask(header: bitstream.Header, total: int) -> np.ndarray | None:
    payload = header.find(bitstream.MASK_CHUNK)
    return None if payload is None else entropy.decode_mask(payload, total)


def layer_decoders(
    header: bitstream.Header, model: SemanticHyperprior, base_only: bool
) -> tuple[int, tuple[entropy.GaussianDecoder, entropy.GaussianDecoder | None]]:
    """The base layer's CRC and a decoder per layer (no enhancement decoder when ``base_only``)."""
    channels, crc, coded = bitstream.unpack_base(header.chunk(bitstream.BASE_CHUNK))
    if channels != model.base_channels:
        raise BitstreamError(f"corrupt bitstream: base layer has {channels} channels, model has {model.base_channels}")
    enhancement = None if base_only else entropy.GaussianDecoder(header.chunk(bitstream.ENHANCEMENT_CHUNK))
    return crc, (entropy.GaussianDecoder(coded), enhancement)


def decode_part(part: Part, layer: entropy.GaussianDecoder, mask: np.ndarray | None, timer: Timer) -> np.ndarray:
    """One part's symbols (zero where not coded)."""
    coded = part.coded(mask)
    with timer("entropy"):
        wanted = part.stds if coded is None else part.stds[:, coded]
        decoded = layer.decode(wanted).reshape(wanted.shape)
    if coded is None:
        return decoded
    symbols = np.zeros(part.stds.shape, dtype=np.int32)
    symbols[:, coded] = decoded
    return symbols
