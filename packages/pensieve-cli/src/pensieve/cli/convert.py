"""``pensieve-cli convert``: write a GGUF file as an MLX model directory that mlx-lm loads by itself."""

from __future__ import annotations

import click
from rich.console import Console

from pensieve.device import format_bytes

__all__ = ["convert"]


@click.command()
@click.argument("gguf_file", type=click.Path())
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option(
    "--dequantize/--keep-quantized",
    default=False,
    help="Write dense float32 weights instead of keeping quantized layers quantized (default: keep).",
)
@click.option(
    "--force",
    is_flag=True,
    help="Convert into a non-empty OUT_DIR, replacing the model files there (other files stay).",
)
def convert(gguf_file: str, out_dir: str, dequantize: bool, force: bool) -> None:
    """Convert GGUF_FILE into OUT_DIR: safetensors weights, config.json and tokenizer files
    (with the chat template), ready for mlx_lm.load(OUT_DIR)."""
    # Imported here: mlx-lm pulls in transformers (~1.5 s), which --help never needs.
    from pensieve.engine import convert_to_mlx

    console = Console(stderr=True)
    with console.status("Converting...") as status:
        out = convert_to_mlx(
            gguf_file,
            out_dir,
            dequantize=dequantize,
            overwrite=force,
            progress=lambda stage: status.update(f"Converting: {stage}..."),
        )
    click.echo(f"Wrote {out}:")
    for path in sorted(out.iterdir()):
        if path.is_file():
            click.echo(f"  {path.name} ({format_bytes(path.stat().st_size)})")
    click.echo(f'Load it with mlx-lm: mlx_lm.load("{out}")')
