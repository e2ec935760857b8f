"""Row names and one-line descriptions of the steering methods, for reports (no torch import)."""

from __future__ import annotations

# name -> (title, summary); the names are what `mosr compare NAME=RUN` rows use
DESCRIPTIONS: dict[str, tuple[str, str]] = {
    "refusal-direction": ("Refusal direction (steering)",
                          "adds the difference-of-means refusal direction at one layer at inference time, no training (Arditi et al. 2024)"),
    "refusal-direction-ablate": ("Refusal direction ablated (steering)",
                                 "projects the refusal direction out of the residual stream at inference time (Arditi et al. 2024)"),
    "scans": ("SCANS (steering)",
              "classifies each query from its hidden states and steers towards or away from refusal at inference time (Cao et al. 2024)"),
    "alphasteer": ("AlphaSteer (steering)",
                   "adds a learned null-space-constrained transform of the activations at inference time (Sheng et al., ICLR 2026)"),
}
