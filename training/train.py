"""Resumable rate-distortion training of a variable-rate :class:`SemanticHyperprior`.

Loss per crop: ``lambda[q] * 255^2 * MSE + bpp`` with the quality ``q`` drawn per crop, so one model
and one run serve every quality level (gain units). Every ``save_every`` steps the model is written
to the weights folder (entropy tables updated, sha256 recorded in the registry), which is also the
checkpoint the next run resumes from: one file per model, overwritten, no optimizer state.

Released models are frozen, so training never writes one: it continues a released model under a new
id in a checkpoint folder (``--init-from``; the repository keeps one, ``checkpoints/``), and
``tools/ship_model.py`` releases that checkpoint when it measures better.
"""

from __future__ import annotations

import itertools
import math
import shutil
import time
from dataclasses import replace
from pathlib import Path

import torch
from tqdm import tqdm

from semcodec.codec.tensors import pad_to_stride
from semcodec.errors import SemcodecError, WeightsError
from semcodec.models import SemanticHyperprior, SemanticHyperpriorConfig
from semcodec.training.budget import Budget, scheduled_lr
from semcodec.training.config import DEFAULT_LAMBDAS, GROWABLE_KEYS, TrainConfig
from semcodec.training.data import CropBank
from semcodec.training.device import pick_device, transform_dtype
from semcodec.training.joint import (
    TokenObjective,
    base_layer_grid,
    load_objective,
    token_distortion,
)
from semcodec.weights import (
    REGISTRY_FILE,
    Registry,
    head_file_name,
    load_registry,
    load_state_dict,
    refuse_frozen,
    save_state_dict,
)
from semcodec.weights.editor import RegistryEditor

PATCH_PREFIXES = ("analysis_patch.", "synthesis_patch.")
"""Parameter names of the patch paths (:attr:`TrainConfig.patch_lr_scale` sets their learning rate)."""


def parameter_groups(model: SemanticHyperprior, cfg: TrainConfig, params: list[torch.nn.Parameter]) -> list[dict]:
    """Adam's groups for the codec's trained ``params``: the patch paths apart, at ``cfg.patch_lr_scale``."""
    patches = {id(p) for n, p in model.named_parameters() if n.startswith(PATCH_PREFIXES)}
    groups = [{"params": [p for p in params if id(p) not in patches], "lr_scale": 1.0}]
    patch_params = [p for p in params if id(p) in patches]
    if patch_params:
        groups.append({"params": patch_params, "lr_scale": cfg.patch_lr_scale})
    return groups


def training_passes(model: SemanticHyperprior, compile: bool) -> tuple:
    """``(forward, entropy_forward)`` of ``model``, compiled by inductor when asked.

    Compiled code shares the model's parameters, so saving and resuming are unchanged; only the
    speed differs (and the noise's random stream: inductor draws its own).
    """
    if not compile:
        return model, model.entropy_forward
    return torch.compile(model), torch.compile(model.entropy_forward)


def learning_rate(cfg: TrainConfig, progress: float, run_step: int) -> float:
    """Linear warm-up (also after a resume, as Adam restarts), flat, then cosine from ``cfg.decay_from`` to 5%."""
    return scheduled_lr(cfg.lr, progress, run_step, cfg.warmup_steps, cfg.decay_from, floor=0.05)


def rd_loss(out: dict, x: torch.Tensor, lambdas: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-crop ``lambda * 255^2 * MSE + bpp``, averaged over the batch."""
    num_pixels = x.shape[2] * x.shape[3]
    bits = sum(-torch.log2(lik).flatten(1).sum(1) for lik in out["likelihoods"].values())
    bpp = bits / num_pixels
    mse = (out["x_hat"] - x).pow(2).flatten(1).mean(1)
    loss = (lambdas * 255**2 * mse + bpp).mean()
    return {"loss": loss, "bpp": bpp.mean(), "mse": mse, "psnr": (-10 * torch.log10(mse.clamp_min(1e-10))).mean()}


def rate_loss(out: dict, pixels: int) -> dict[str, torch.Tensor]:
    """Bits per pixel of ``y`` and ``z`` (the whole loss when only the entropy model trains)."""
    bits = sum(-torch.log2(lik).sum() for lik in out["likelihoods"].values())
    bpp = bits / pixels
    return {"loss": bpp, "bpp": bpp}


class LatentCache:
    """``g_a`` outputs of random crops, computed once: the entropy model then trains at 1/16
    resolution without running the transforms, many times faster on a CPU."""

    def __init__(self, model: SemanticHyperprior, bank: CropBank, count: int, device: torch.device):
        chunks = []
        with torch.no_grad():
            for start in range(0, count, 16):
                chunks.append(model.analysis_transform(bank.sample(min(16, count - start)).to(device)))
        self.latents = torch.cat(chunks)
        self.pixels_per_latent = model.latent_stride**2 * self.latents.shape[2] * self.latents.shape[3]

    def sample(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        index = torch.randint(len(self.latents), (batch,), generator=generator)
        y = self.latents[index.to(self.latents.device)]
        return y.flip(3) if torch.rand(1, generator=generator) < 0.5 else y


def build_or_resume(cfg: TrainConfig) -> tuple[SemanticHyperprior, int]:
    """A fresh model, the one already registered under ``cfg.model_name`` (with its step count), or,
    for a model new to ``weights_dir``, a copy of ``cfg.init_from`` (the model it continues)."""
    source = _starting_registry(cfg)
    if source is not None:
        registry, source_name = source
        entry = registry.model(source_name)
        changed = sorted(k for k, v in cfg.arch.items() if k not in GROWABLE_KEYS and entry.config.get(k) != v)
        if changed:
            raise WeightsError(
                f"{cfg.model_name} is already trained with other {', '.join(changed)}; "
                "a new architecture needs a new --model-name"
            )
        trained = registered_lambdas(registry, source_name)
        state = load_state_dict(registry, source_name)
        qualities = entry.config.get("num_qualities")
        if len(cfg.lambdas) > qualities and len(trained) == qualities and cfg.lambdas[:qualities] == trained:
            state = extend_gains(state, trained, cfg.lambdas)
        elif qualities != len(cfg.lambdas):
            raise WeightsError(
                f"{cfg.model_name} has {qualities} qualities, not the {len(cfg.lambdas)} "
                "lambdas asked for (pass --lambdas with one per quality, or its lambdas and more after them)"
            )
        config = {**entry.config, **cfg.arch, "num_qualities": len(cfg.lambdas)}
        model = SemanticHyperprior(SemanticHyperpriorConfig(**config))
        missing, unexpected = model.load_state_dict(state, strict=False)
        # an architecture change may only *add* parts that start as the identity
        if unexpected or not all(model.identity_started(key, entry.config) for key in missing):
            raise WeightsError(
                f"{cfg.model_name}: its saved weights do not fit {cfg.arch} (a trained model may only gain parts)"
            )
        return model, int(entry.info.get("steps", 0))
    arch = SemanticHyperpriorConfig(**{**cfg.arch, "num_qualities": len(cfg.lambdas)})
    return SemanticHyperprior(arch), 0


def _starting_registry(cfg: TrainConfig) -> tuple[Registry, str] | None:
    """Where the weights a run starts from live: ``weights_dir`` when it has the model (resume),
    ``init_weights`` for ``init_from`` (continue another model under a new id), else nowhere (new)."""
    if (cfg.weights_dir / REGISTRY_FILE).exists():
        registry = load_registry(cfg.weights_dir)
        if cfg.model_name in registry.models:
            return registry, cfg.model_name
    if cfg.init_from is None:
        return None
    registry = load_registry(cfg.init_weights)
    if cfg.init_from not in registry.models:
        raise WeightsError(f"--init-from {cfg.init_from!r}: no such model in {cfg.init_weights / REGISTRY_FILE}")
    return registry, cfg.init_from


def next_model_id(name: str, taken: set[str] | frozenset[str] = frozenset()) -> str:
    """The id of the next revision of ``name``: ``vit-hp-192`` -> ``vit-hp-192.r2`` -> ``.r3``, skipping ``taken``."""
    stem, _, tag = name.rpartition(".r")
    base, revision = (stem, int(tag)) if stem and tag.isdigit() else (name, 1)
    while True:
        revision += 1
        candidate = f"{base}.r{revision}"
        if candidate not in taken:
            return candidate


def extend_gains(
    state: dict[str, torch.Tensor], trained: tuple[float, ...], lambdas: tuple[float, ...]
) -> dict[str, torch.Tensor]:
    """A trained model's gain units for more qualities (``lambdas`` extends ``trained``).

    Each new quality's log-gains continue the last trained step, scaled by its lambda's log-ratio:
    in vit-hp-192 the mean log-gain step per unit of log-lambda is 0.404-0.408 over all three of its
    steps, so the new levels start near their rate and training only fine-tunes them.
    """
    if len(trained) < 2 or any(b <= a for a, b in itertools.pairwise(lambdas)):
        raise WeightsError("adding qualities needs two trained ones and increasing lambdas")
    state = dict(state)
    last, before = len(trained) - 1, len(trained) - 2
    step_log_lambda = math.log(trained[last] / trained[before])
    for key in ("log_gain", "log_inv_gain"):
        table = state[key]
        step = table[last] - table[before]
        rows = [table[last] + step * math.log(lam / trained[last]) / step_log_lambda for lam in lambdas[len(trained) :]]
        state[key] = torch.cat([table, torch.stack(rows)])
    return state


def save(
    model: SemanticHyperprior,
    cfg: TrainConfig,
    step: int,
    seconds: float,
    n_images: int,
    objective: TokenObjective | None = None,
) -> None:
    """Freeze the entropy tables, write the weights, and record file, hash and qualities (and the
    head trained jointly with them, as the head for these very weights)."""
    refuse_frozen(cfg.weights_dir, cfg.model_name, "train")
    model.eval()
    model.update(force=True)
    model.train()
    file = f"{cfg.model_name}.safetensors"
    sha = save_state_dict(model.state_dict(), cfg.weights_dir / file, metadata={"steps": str(step)})
    editor = RegistryEditor(cfg.weights_dir)
    previous_entry = editor.model(cfg.model_name)
    previous = previous_entry.get("info") or _initial_info(cfg)
    device = next(model.parameters()).device.type
    by_device = dict(previous.get("train_seconds_by_device", {}))
    by_device[device] = round(by_device.get(device, 0) + seconds, 1)
    editor.put_model(
        cfg.model_name,
        {
            "architecture": "semantic-hyperprior",
            "config": model.config.to_dict(),
            "file": file,
            "sha256": sha,
            "token_space": "semcodec-latent",
            "qualities": {str(i + 1): {"gain_index": i, "lambda": lam} for i, lam in enumerate(cfg.lambdas)},
            "info": {
                "steps": step,
                "train_seconds": round(previous.get("train_seconds", 0) + seconds, 1),
                "train_seconds_by_device": by_device,  # a GPU second is worth many CPU seconds
                "batch": cfg.batch,
                "crop": cfg.crop,
                "train_images": n_images,
                "data": sorted({p.parent.name for p in cfg.data}),
                **({"init_from": previous["init_from"]} if previous.get("init_from") else {}),
            },
            # heads stay listed: the codec refuses them until `semcodec distill` re-fits them to these
            # weights (which starts from them)
            "token_heads": previous_entry.get("token_heads") if previous_entry else initial_heads(cfg),
        },
    )
    table = {i + 1: (i, lam) for i, lam in enumerate(cfg.lambdas)}
    kept = editor.default_quality if editor.default_quality in table else min(3, len(cfg.lambdas))
    editor.serve_only(cfg.model_name, table, kept)
    if objective is not None:
        head_file = head_file_name(cfg.model_name, objective.space)
        parts = "'s encoder (decoder frozen)" if cfg.encoder_only else ""
        head_sha = save_state_dict(objective.head.state_dict(), cfg.weights_dir / head_file, {"steps": str(step)})
        record = {k: v for k, v in objective.record.items() if k != "held_out"}  # measured by the bench, not here
        editor.put_head(
            cfg.model_name,
            objective.space,
            {
                **record,
                "file": head_file,
                "sha256": head_sha,
                "codec_sha256": sha,
                "steps": step,
                "trained": f"jointly with the codec{parts}, token weight {cfg.token_weight:g}",
            },
        )
    editor.save()


def default_model_name(cfg: TrainConfig) -> str:
    """With ``init_from``: the model ``weights_dir`` already continues from it (resume), else its next
    revision id; without: the model ``weights_dir`` serves (see :func:`served_model`)."""
    if cfg.init_from is None:
        return served_model(cfg.weights_dir)
    taken = set(load_registry(cfg.init_weights).models)
    if (cfg.weights_dir / REGISTRY_FILE).exists():
        registry = load_registry(cfg.weights_dir)
        for name, entry in registry.models.items():
            if entry.info.get("init_from") == cfg.init_from and not entry.frozen:
                return name
        taken |= set(registry.models)
    return next_model_id(cfg.init_from, taken)


def _initial_info(cfg: TrainConfig) -> dict:
    """The training record a model continued from ``init_from`` starts with: that model's, plus its name."""
    if cfg.init_from is None:
        return {}
    return {**load_registry(cfg.init_weights).model(cfg.init_from).info, "init_from": cfg.init_from}


def initial_heads(cfg: TrainConfig) -> dict[str, dict]:
    """The token heads of ``init_from``, copied beside a model continued from it: `semcodec distill`
    then re-fits them to the new weights starting from them, as after any retraining."""
    if cfg.init_from is None:
        return {}
    source = load_registry(cfg.init_weights)
    heads = {}
    for space, head in source.model(cfg.init_from).token_heads.items():
        file = head_file_name(cfg.model_name, space)
        shutil.copyfile(source.root / head.file, cfg.weights_dir / file)
        heads[space] = {**head.record, "file": file}
    return heads


def served_model(weights_dir: Path) -> str:
    """The model ``weights_dir`` serves at its default quality, else ``vit-hp-small`` (a new folder).

    Why: training the shipped folder without naming a model must resume what it ships, never start a
    second model beside it and repoint the qualities at that one.
    """
    if not (weights_dir / REGISTRY_FILE).exists():
        return "vit-hp-small"
    registry = load_registry(weights_dir)
    return registry.quality(registry.default_quality).model


def trained_lambdas(weights_dir: Path, model_name: str) -> tuple[float, ...]:
    """The lambdas of ``model_name``'s quality levels in gain order; empty for an untrained model."""
    if not (weights_dir / REGISTRY_FILE).exists():
        return ()
    return registered_lambdas(load_registry(weights_dir), model_name)


def registered_lambdas(registry: Registry, model_name: str) -> tuple[float, ...]:
    """The lambdas of ``model_name``'s own quality levels in gain order; empty for an unknown model."""
    if model_name not in registry.models:
        return ()
    levels = sorted((q.gain_index, q.lmbda) for q in registry.model(model_name).qualities.values())
    return tuple(lam for _, lam in levels)


def train(cfg: TrainConfig) -> None:
    if cfg.model_name is None:
        cfg = replace(cfg, model_name=default_model_name(cfg))
    refuse_frozen(cfg.weights_dir, cfg.model_name, "train")
    if cfg.encoder_only and cfg.entropy_only:
        raise SemcodecError("--encoder-only and --entropy-only train disjoint parts: choose one")
    if cfg.lambdas is None:
        own = trained_lambdas(cfg.weights_dir, cfg.model_name)
        if not own and cfg.init_from is not None:
            own = registered_lambdas(load_registry(cfg.init_weights), cfg.init_from)
        cfg = replace(cfg, lambdas=own or DEFAULT_LAMBDAS)
    torch.manual_seed(cfg.seed)
    cfg.weights_dir.mkdir(parents=True, exist_ok=True)
    paths = cfg.data[: cfg.max_images] if cfg.max_images else cfg.data
    device = pick_device(cfg.device)
    model, step = build_or_resume(cfg)
    objective = None
    if cfg.token_space is not None:
        source = _starting_registry(cfg)
        if source is None:
            raise WeightsError("joint training with a token space starts from a trained model and its head")
        objective = load_objective(source[0], source[1], model, cfg.token_space, cfg.token_weight, cfg.tower_weights)
        objective.head.to(device).train()
        objective.tower.to(device)
        cfg = replace(cfg, crop=objective.tower.input_size)  # the crop a machine's file holds, padded below
    short_side = None if cfg.downscale else max(256, cfg.crop)  # downscale keeps the photos' own size
    bank = CropBank(paths, short_side=short_side, crop=cfg.crop, seed=cfg.seed, downscale=cfg.downscale)
    model.to(device, memory_format=torch.channels_last).train()  # 7-10% faster CPU steps than NCHW
    dtype = transform_dtype(cfg.precision, device)
    what = "entropy model only" if cfg.entropy_only else f"transforms in {dtype or torch.float32}"
    what += ", encoder only" if cfg.encoder_only else ""
    compiled = ", compiled (the first step compiles: minutes)" if cfg.compile else ""
    tqdm.write(f"{cfg.model_name}: training on {device.type}, {what}{compiled}")
    forward, entropy_forward = training_passes(model, cfg.compile)
    aux_params = [p for n, p in model.named_parameters() if n.endswith("quantiles")]
    main_params = [p for n, p in model.named_parameters() if trains(cfg, n)]
    if cfg.encoder_only:
        model.requires_grad_(False)
        for p in main_params:
            p.requires_grad_(True)
        aux_params = []  # the entropy bottleneck's quantiles are the decoder's: frozen too
    cache = LatentCache(model, bank, cfg.latent_cache, device) if cfg.entropy_only else None
    groups = parameter_groups(model, cfg, main_params)
    if objective is not None:
        head_params = list(objective.head.parameters())
        groups.append({"params": head_params, "lr_scale": cfg.head_lr_scale})
        main_params = main_params + head_params
    optimizer = torch.optim.Adam(groups, lr=cfg.lr)
    aux_optimizer = torch.optim.Adam(aux_params, lr=1e-3) if aux_params else None
    lambdas = torch.tensor(cfg.lambdas, device=device)
    generator = torch.Generator().manual_seed(cfg.seed + step)
    budget, last_save, run_step = Budget(cfg.steps, cfg.max_minutes), time.time(), 0
    bar = tqdm(total=cfg.steps, initial=step, desc=cfg.model_name, dynamic_ncols=True)
    while step < cfg.steps:
        progress = budget.progress(step)
        if progress is None:
            break
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(cfg, progress, run_step) * group["lr_scale"]
        quality = torch.randint(len(cfg.lambdas), (cfg.batch,), generator=generator).to(device)
        if cache is not None:
            y = cache.sample(cfg.batch, generator) * model.quality_gain(quality).detach()
            losses = rate_loss(entropy_forward(y), cfg.batch * cache.pixels_per_latent)
        elif objective is not None:
            x = bank.sample(cfg.batch).to(device)
            h, w = x.shape[2:]
            out = forward(pad_to_stride(x, model.downsampling), quality, transform_dtype=dtype)
            grid = base_layer_grid(model, out, quality, h, w)
            losses = rd_loss({**out, "x_hat": out["x_hat"][:, :, :h, :w]}, x, lambdas[quality])
            tokens = token_distortion(objective, grid, x)
            losses["loss"] = losses["loss"] + (lambdas[quality] * cfg.token_weight * tokens["distortion"]).mean()
            losses["tokens"] = tokens["distortion"].mean()
        else:
            x = bank.sample(cfg.batch).to(device)
            out = forward(x, quality, transform_dtype=dtype)
            losses = rd_loss(out, x, lambdas[quality])
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(main_params, 1.0)
        optimizer.step()
        if aux_optimizer is not None:
            aux_loss = model.aux_loss()
            aux_optimizer.zero_grad(set_to_none=True)
            aux_loss.backward()
            aux_optimizer.step()
        step += 1
        run_step += 1
        bar.update(1)
        if step % 20 == 0:  # reading losses syncs a GPU: not every step
            bar.set_postfix(
                loss=f"{losses['loss'].item():.3f}",
                bpp=f"{losses['bpp'].item():.3f}",
                psnr=f"{losses['psnr'].item():.2f}" if "psnr" in losses else "-",
                **({"tok": f"{losses['tokens'].item():.3f}"} if "tokens" in losses else {}),
                lr=f"{optimizer.param_groups[0]['lr']:.1e}",
            )
        if step % cfg.save_every == 0:
            save(model, cfg, step, time.time() - last_save, len(bank), objective)
            last_save = time.time()
    bar.close()
    save(model, cfg, step, time.time() - last_save, len(bank), objective)


ENCODER_PARTS = ("g_a.", "h_a.", "log_gain")
"""Parameters only an encoder runs: the analysis, its quality gains and the hyper-analysis (a decoder
reads ``z_hat`` through the entropy bottleneck and ``h_s``, never ``h_a``)."""


def trains(cfg: TrainConfig, name: str) -> bool:
    """Whether parameter ``name`` of the codec learns in this run (the aux quantiles have their own optimizer)."""
    if name.endswith("quantiles"):
        return False
    if cfg.encoder_only:
        return name.startswith(ENCODER_PARTS)
    if cfg.entropy_only:
        return not name.startswith(("g_a.", "g_s.", "log_gain", "log_inv_gain"))
    return True
