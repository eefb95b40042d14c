"""Next-frequency order, as in NFIG ("NFIG: Autoregressive Image Generation with Next-Frequency Prediction",
arXiv 2503.07076; later versions are titled "NFIG: Multi-Scale Autoregressive Image Generation via Frequency
Ordering").

One frequency band per step, low to high; all tokens of a band at once, bidirectional inside the band and causal
across bands; the input of band s is the latent composed from bands 0..s-1, resized to band s's grid.

What differs from scale.py is the tokenizer, not the order. NFIG's FR-VAE quantizes frequency bands of the latent
(band s carries what a grid of band s's size can hold beyond the lower bands), where VAR's tokenizer quantizes the
residuals of spatial downsamplings; the paper's generator is a VAR-style transformer predicting the band token
maps coarse to fine (its baseline is VAR-d20). Given the grids, the schedule, the mask, the inputs and the targets
are the same, so this order shares scale.py's code and only binds it to the ``frequency`` tokenizer kind. (NFIG's
own code was not available to check details beyond the paper.)
"""

from __future__ import annotations

from argen.orders.base import register_order
from argen.orders.scale import CoarseToFineOrder


@register_order
class FrequencyOrder(CoarseToFineOrder):
    name = "frequency"
    method, paper, arxiv = "next-frequency", "NFIG", "2503.07076"
    default_tokenizer = "frequency"
    tokenizer_kinds = ("frequency",)
    rank = 30
