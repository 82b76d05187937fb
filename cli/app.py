"""The ``semcodec`` command group and what every command shares: options, input and output, the
one-line failure (any error a user can cause ends as one line on stderr and exit status 1), the
interrupt handling and ``--version``. The commands live in :mod:`~semcodec.cli.coding`,
:mod:`~semcodec.cli.training` and :mod:`~semcodec.cli.batch`; :mod:`~semcodec.cli.main` assembles them.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import click

from semcodec import __version__
from semcodec.codec.defaults import (
    DEFAULT_EFFORT,
    DEFAULT_TOKEN_DTYPE,
    EFFORT_REFINE_STEPS,
    SUGGESTED_REFINE_STEPS,
    TOKEN_DTYPES,
)
from semcodec.errors import SemcodecError

INTERRUPTED = "interrupted; no output written"
EXIT_INTERRUPTED = 130
TARGET_SUFFIX = {"pixels": ".png", "tokens": ".safetensors"}


_effort = click.option(
    "--effort",
    type=click.IntRange(0, len(EFFORT_REFINE_STEPS) - 1),
    default=DEFAULT_EFFORT,
    show_default=True,
    help="Encoder effort: 0 is one analysis pass; levels 1 and 2 optimise each image's latent for "
    f"{' and '.join(map(str, EFFORT_REFINE_STEPS[1:]))} steps (about 1 s a step for a Kodak image on one core) "
    "for a smaller file at the same quality. Same format, same decoder.",
)
_refine_steps = click.option(
    "--refine-steps",
    type=click.IntRange(min=0),
    default=None,
    help="Refinement steps, for finer control than --effort (not both; e.g. "
    f"{SUGGESTED_REFINE_STEPS}). With --no-semantic-layer, for the token space's head tokens too.",
)
"""Shared by ``encode`` and ``batch encode``: one default, one help."""


def refinement_steps(effort: int, refine_steps: int | None) -> int:
    """The encoder's refinement steps: ``--refine-steps`` when given, else the ``--effort`` level's."""
    if refine_steps is not None:
        if effort != DEFAULT_EFFORT:
            raise click.UsageError("--effort and --refine-steps both set the encoder's refinement: give one")
        return refine_steps
    return EFFORT_REFINE_STEPS[effort]


_max_pixels = click.option(
    "--max-pixels",
    type=click.IntRange(min=1),
    default=None,
    help="Refuse images (and files whose image is) larger than this many pixels  [default: 200000000]; "
    "memory grows with the pixels (about 1 GB plus 10 bytes a pixel).",
)
_token_dtype = click.option(
    "--dtype",
    type=click.Choice(TOKEN_DTYPES),
    default=DEFAULT_TOKEN_DTYPE,
    show_default=True,
    help="Token dtype (tokens target).",
)
"""Shared by ``decode`` and ``batch decode``."""


def _print_error(message: str) -> None:
    click.echo(f"semcodec: error: {message}", err=True)


def _fail(message: str, code: int = 1) -> None:
    _print_error(message)
    sys.exit(code)


class _Group(click.Group):
    """Turns semcodec's typed errors and OS errors into one line on stderr, never a traceback."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except SemcodecError as exc:
            _fail(str(exc))
        except KeyboardInterrupt:
            _fail(INTERRUPTED, EXIT_INTERRUPTED)
        except MemoryError:
            _fail("out of memory (image too large for this machine)")
        except OSError as exc:
            _fail(f"{exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}")


def run() -> None:
    """The ``semcodec`` program: ``main``, then an interrupted run leaves at once with status 130.

    Outputs are already cleaned up when the interrupt reaches here. Leaving through ``os._exit``
    skips interpreter shutdown, where an interrupt that landed inside a half-done import (torch's,
    a few CPU seconds into a run) can still turn the exit into death by SIGINT (status -2).
    Embedders call ``main`` and get ``SystemExit(130)`` instead.
    """
    try:
        main(prog_name="semcodec")
    except KeyboardInterrupt:  # outside click's own handling (it makes one in parsing "Aborted!"): nothing written
        _print_error(INTERRUPTED)
    except SystemExit as exc:
        if exc.code != EXIT_INTERRUPTED:
            raise
    else:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_INTERRUPTED)


def _interrupt_on_sigterm() -> None:
    """Treat SIGTERM like Ctrl-C, so temporary files are removed and no partial output remains."""
    import signal

    def interrupt(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread (e.g. embedded); nothing to install
        pass


def _read_input(path: str, until_chunk: str | None = None) -> bytes:
    """The bytes of ``path`` ('-': stdin); with ``until_chunk``, only the file's prefix up to it."""
    from semcodec.bitstream import read_prefix
    from semcodec.cli.checks import check_input_file

    if path == "-":
        stream = sys.stdin.buffer
        return read_prefix(stream, until_chunk) if until_chunk else stream.read()
    check_input_file(path)
    with open(path, "rb") as stream:
        return read_prefix(stream, until_chunk) if until_chunk else stream.read()


def _write_output(path: str, data: bytes, force: bool) -> None:
    from semcodec.fileio import write_atomic

    if path == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        write_atomic(path, data, force=force)


def _registry(ctx: click.Context):
    """The weights registry (torch-free): what can be checked before a model loads."""
    from semcodec.weights import load_registry

    return load_registry(ctx.obj.get("weights"))


def _codec(ctx: click.Context, max_pixels: int | None = None):
    from semcodec.codec import Codec

    codec = Codec(ctx.obj.get("weights"))
    codec.progress = sys.stderr.isatty()  # a bar for large images on a terminal, nothing in logs
    if max_pixels is not None:
        codec.max_pixels = max_pixels
    return codec


def _version_text(weights_dir: Path | None = None) -> str:
    """``semcodec --version``: the release, the formats it reads and writes, and its models (no torch)."""
    from semcodec.bitstream import FORMAT_VERSION, READABLE_VERSIONS
    from semcodec.weights import load_registry

    lines = [
        f"semcodec {__version__}",
        f"bitstream format {FORMAT_VERSION} (reads {', '.join(map(str, READABLE_VERSIONS))})",
    ]
    try:
        registry = load_registry(weights_dir)
    except SemcodecError as exc:
        return "\n".join([*lines, f"models: none ({exc})"])
    served = {name: sorted(q for q, v in registry.qualities.items() if v.model == name) for name in registry.models}
    in_place_of = {model: base for base, model in registry.encoder_conditioned.items()}
    for name, entry in registry.models.items():
        release = f"released in {entry.release}" if entry.release else "unreleased checkpoint"
        qualities = served[name] or served.get(in_place_of.get(name, ""), [])
        role = ", decodes"
        if qualities:
            role = f", encodes q{qualities[0]}-{qualities[-1]}" if len(qualities) > 1 else f", encodes q{qualities[0]}"
            if name in in_place_of:
                role += f" of files with {entry.semantic_condition.layer}"
        lines.append(f"model {name} ({release}, weights {entry.sha256[:16]}{role})")
    writes = set(registry.encoder_semantic_layers.values())
    for name, layer in registry.semantic_layers.items():
        release = f"released in {layer.release}" if layer.release else "unreleased checkpoint"
        role = ", decodes"
        if name in writes:
            default = " (every default file)" if registry.default_token_space == layer.tower else ""
            role = f", encodes --token-space {layer.tower}{default}"
        lines.append(f"semantic layer {name} ({release}, weights {layer.sha256[:16]}{role})")
    return "\n".join(lines)


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(_version_text())
        ctx.exit()


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-V",
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Show the release, bitstream format and installed models, and exit.",
)
@click.option(
    "--weights",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="SEMCODEC_WEIGHTS",
    help="Folder with registry.json and weights (default: the installed weights).",
)
@click.pass_context
def main(ctx: click.Context, weights: Path | None) -> None:
    """semcodec: a learned semantic image codec (pixels for people, tokens for machines)."""
    _interrupt_on_sigterm()
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", module=r"(torch|compressai|timm)\..*")
    ctx.ensure_object(dict)
    ctx.obj["weights"] = weights
