"""`prepcodec export onnx`: a trained NPP as an ONNX file for onnxruntime (edge devices, no torch)."""

from __future__ import annotations

from pathlib import Path

import typer

export_app = typer.Typer(help="Export trained networks for deployment.", no_args_is_help=True)


@export_app.command("onnx")
def onnx_command(
    out: Path = typer.Argument(..., help="output .onnx file"),
    npp: str = typer.Option(..., "--npp", help="a shipped NPP name (`prepcodec npp list`) or an exported .pt"),
) -> None:
    """Export the NPP to ONNX (inputs image N3HW in [0, 1] and qp (N,), dynamic size), checked against torch on
    the bundled photos at several sizes before the file is written."""
    from prepcodec.commands.outputs import check_output_file
    from prepcodec.export.onnx_export import PARITY_TOL, export_onnx

    check_output_file(out)
    info = export_onnx(npp.removeprefix("npp:"), out)
    worst = max(d for _, _, d in info["parity"])
    sizes = ", ".join(f"{w}x{h}" for w, h, _ in info["parity"])
    typer.echo(f"{out}: npp:{info['name']} (weights {info['weights_sha256'][:12]}); onnxruntime matches torch "
               f"within {worst:.1e} (tolerance {PARITY_TOL:g}) at {sizes}")


def register(app: typer.Typer) -> None:
    """Add `prepcodec export ...`."""
    app.add_typer(export_app, name="export")
