"""The static feature browser of `argen features`: an index.html and one page per SAE latent with its top activating
images (firing cells tinted by activation, all steps overlaid, the steps listed), its activation histogram, its
class and step breakdown, the best predicate with its detection and fuzzing scores
(argen.interpret.interpretation) and, for an SAE on per-head attention outputs, each latent's head attribution
(argen.interpret.attention_features)."""

from __future__ import annotations

import html
import json
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor

from argen.interpret.attention_features import head_attribution
from argen.interpret.interpretation import Interpretation, cell_statistics, interpret_latent, with_regions
from argen.interpret.sae import SparseAutoencoder

STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:60em}img{image-rendering:pixelated;margin:2px}"
    "table{border-collapse:collapse}td,th{padding:2px 8px;border-bottom:1px solid #ddd;text-align:right}"
)


@torch.no_grad()
def latent_activations(sae: SparseAutoencoder, rows: Tensor, *, batch: int = 8192) -> Tensor:
    """(P, D) hooked activations → (P, M) SAE codes."""
    return torch.cat([sae.encode(rows[start : start + batch].float()) for start in range(0, rows.shape[0], batch)])


def highlighted(image: Tensor, cells: Tensor, table: dict[str, Tensor], rows: Tensor, *, scale: int = 4) -> Image.Image:
    """uint8 (C, H, W) image with the cells of positions ``rows`` tinted red by ``cells`` (their activations)."""
    pixels = image.float().expand(3, -1, -1).clone() if image.shape[0] == 1 else image.float().clone()
    _, height, width = pixels.shape
    tint = torch.zeros(height, width)
    peak = float(cells.max()) if cells.numel() else 1.0
    for row_index, value in zip(rows.tolist(), cells.tolist()):
        grid_height, grid_width = int(table["grid_height"][row_index]), int(table["grid_width"][row_index])
        row, col = int(table["row"][row_index]), int(table["col"][row_index])
        top, bottom = row * height // grid_height, (row + 1) * height // grid_height
        left, right = col * width // grid_width, (col + 1) * width // grid_width
        tint[top:bottom, left:right] = torch.maximum(tint[top:bottom, left:right], torch.tensor(value / peak))
    pixels[0] = pixels[0] * (1 - tint) + 255 * tint
    pixels[1:] = pixels[1:] * (1 - 0.6 * tint)
    array = pixels.clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(array).resize((width * scale, height * scale), Image.NEAREST)


def histogram_svg(values: Tensor, *, bins: int = 30, width: int = 300, height: int = 80) -> str:
    """An inline SVG bar chart of the positive activations."""
    if values.numel() == 0:
        return "<p>never fires</p>"
    counts = torch.histc(values.float(), bins=bins, min=0, max=float(values.max()))
    bar = width / bins
    rects = "".join(
        f'<rect x="{index * bar:.1f}" y="{height - height * count / counts.max():.1f}" width="{bar - 1:.1f}" '
        f'height="{height * count / counts.max():.1f}" fill="#c33"/>'
        for index, count in enumerate(counts.tolist())
    )
    return f'<svg width="{width}" height="{height}">{rects}</svg><br>0 … {float(values.max()):.3g}'


def breakdown(activation: Tensor, keys: Tensor, names: list[str] | None, title: str) -> str:
    """A table of firing rate and mean activation per value of ``keys`` (class or step)."""
    rows = []
    for value in keys.unique().tolist():
        chosen = keys == value
        rate = float((activation[chosen] > 0).float().mean())
        label = names[value] if names and 0 <= value < len(names) else str(value)
        rows.append(
            f"<tr><td>{html.escape(label)}</td><td>{rate:.3f}</td><td>{float(activation[chosen].mean()):.3g}</td></tr>"
        )
    return f"<h3>{title}</h3><table><tr><th>{title}</th><th>fires</th><th>mean</th></tr>{''.join(rows)}</table>"


def head_table(heads: Tensor | None) -> str:
    """The head attribution (H,) of a latent as a table; empty for an SAE that is not on per-head outputs."""
    if heads is None:
        return ""
    rows = "".join(f"<tr><td>{head}</td><td>{share:.3f}</td></tr>" for head, share in enumerate(heads.tolist()))
    return f"<h2>Head attribution</h2><table><tr><th>head</th><th>share</th></tr>{rows}</table>"


def feature_page(
    feature: int, activation: Tensor, table: dict[str, Tensor], images: Tensor, out: Path, *,
    classes: list[str] | None, interpretation: Interpretation | None, top: int = 8, heads: Tensor | None = None,
) -> None:  # fmt: skip
    """Write ``out/feature-N.html`` and its pictures for latent ``feature`` with activations (P,); ``heads`` (H,)
    its head attribution, for an SAE on per-head attention outputs."""
    sequence_peak = torch.zeros(images.shape[0]).scatter_reduce_(0, table["sequence"], activation, "amax")
    pictures = []
    for sequence in sequence_peak.argsort(descending=True)[:top].tolist():
        if sequence_peak[sequence] <= 0:
            break
        rows = ((table["sequence"] == sequence) & (activation > 0)).nonzero().squeeze(1)
        name = f"feature-{feature}-{sequence}.png"
        highlighted(images[sequence], activation[rows], table, rows).save(out / name)
        steps = ", ".join(str(step) for step in table["step"][rows].unique().tolist())
        pictures.append(f'<figure style="display:inline-block"><img src="{name}"><figcaption>max '
                        f"{float(sequence_peak[sequence]):.3g}<br>steps {steps}</figcaption></figure>")  # fmt: skip
    explanation = "<p>no explanation (too few examples)</p>"
    if interpretation is not None:
        parts = {"detection": interpretation.detection, "fuzzing": interpretation.fuzzing}
        scores = {key: {name: round(value, 3) for name, value in part.items()} for key, part in parts.items()}
        described = html.escape(interpretation.predicate.describe())
        explanation = f"<p><b>{described}</b></p><pre>{html.escape(json.dumps(scores, indent=1))}</pre>"
    body = (
        f"<h1>Feature {feature}</h1><p><a href='index.html'>all features</a> · fires at "
        f"{float((activation > 0).float().mean()):.4f} of positions</p><h2>Explanation</h2>{explanation}"
        + head_table(heads)
        + f"<h2>Top activating images</h2>{''.join(pictures)}"
        f"<h2>Activations</h2>{histogram_svg(activation[activation > 0])}"
        + (breakdown(activation, table["label"], classes, "class") if bool((table["label"] >= 0).any()) else "")
        + breakdown(activation, table["step"], None, "step")
    )
    (out / f"feature-{feature}.html").write_text(f"<!doctype html><meta charset='utf-8'><style>{STYLE}</style>{body}")


def write_feature_pages(
    sae: SparseAutoencoder, rows: Tensor, table: dict[str, Tensor], images: Tensor, out: str | Path, *,
    classes: list[str] | None = None, features: int = 32, title: str = "", heads: int | None = None,
) -> Path:  # fmt: skip
    """The browser for the ``features`` most often firing latents of ``sae`` on ``rows`` (P, D): ``out/index.html``
    and a page per latent. ``images`` uint8 (N, C, H, W) are the decoded sequences of ``table``; ``heads``: the
    attention heads of an ``attn.z`` hook point (adds the head attribution column)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    codes = latent_activations(sae, rows)
    table = with_regions({**table, **cell_statistics(images, table)})
    rate = (codes > 0).float().mean(0)
    chosen = [feature for feature in rate.argsort(descending=True)[:features].tolist() if rate[feature] > 0]
    attribution = head_attribution(sae, heads) if heads else None  # (M, H)
    entries, summary = [], {}
    for feature in chosen:
        interpretation = interpret_latent(codes[:, feature], table, seed=feature)
        shares = None if attribution is None else attribution[feature]
        feature_page(feature, codes[:, feature], table, images, out, classes=classes, interpretation=interpretation,
                     heads=shares)  # fmt: skip
        head = "" if shares is None else f"<td>{int(shares.argmax())} ({float(shares.max()):.2f})</td>"
        explained = interpretation.predicate.describe() if interpretation else ""
        f1 = interpretation.detection.get("f1", float("nan")) if interpretation else float("nan")
        summary[feature] = interpretation.as_dict() if interpretation else {}
        entries.append(f"<tr><td><a href='feature-{feature}.html'>{feature}</a></td><td>{float(rate[feature]):.4f}</td>"
                       f"<td style='text-align:left'>{html.escape(explained)}</td><td>{f1:.3f}</td>"
                       f"{head}</tr>")  # fmt: skip
    dead = float((rate == 0).float().mean())
    index = (
        f"<!doctype html><meta charset='utf-8'><style>{STYLE}</style><h1>{html.escape(title or 'SAE features')}</h1>"
        f"<p>{sae.config.latents} latents ({sae.config.kind}) at {html.escape(sae.config.hook)}; {dead:.3f} never "
        f"fire here</p><table><tr><th>feature</th><th>fires</th><th>explanation</th><th>detection F1</th>"
        + ("" if attribution is None else "<th>top head (share)</th>")
        + "</tr>"
        f"{''.join(entries)}</table>"
    )
    (out / "index.html").write_text(index)
    (out / "explanations.json").write_text(json.dumps(summary, indent=1) + "\n")
    return out / "index.html"
