"""The start-up probe: does the engine reproduce the exporting machine's coefficients?

A misconfigured pooler (MEAN instead of LAST, an activation that normalises, the wrong
folder) still answers 200 with vectors of the right size, and routing on them would be
silently wrong. So before the remote scorer is ready, the exported probe prompts go
through it and must land within a tolerance; otherwise this says what is likely wrong.
"""

from __future__ import annotations

import numpy as np

from router.scoring.exported import ExportedP2L

ENGINE_FLAGS = (
    "--runner pooling --convert embed "
    '--pooler-config \'{"pooling_type":"LAST","use_activation":false}\''
)


def fidelity_error(model: ExportedP2L, hidden: np.ndarray | None, tolerance: float) -> str | None:
    """None when the engine's hidden states give the probe's outputs; else why not."""
    if not model.probe or hidden is None:
        return "the exported folder has no probe; export it again with export-backbone"
    for case in model.probe:
        ids = model.encode([model.render(case.messages)])[0][0]
        if ids != case.ids:
            return (
                f"this router tokenizes probe {case.name!r} differently from the exporting "
                "machine: the tokenizer files or the tokenizers/transformers versions differ"
            )
    if hidden.ndim != 2 or hidden.shape[1] != model.hidden_size:
        return (
            f"the engine answers vectors of size {hidden.shape[-1]}, the head takes "
            f"{model.hidden_size}: the engine serves a different model than --p2l-model"
        )
    coefs, eta = model.apply_head(hidden)
    errors = []
    for row, case in enumerate(model.probe):
        err = float(np.max(np.abs(coefs[row] - case.coefs)))
        if eta is not None and case.eta is not None:
            err = max(err, abs(float(eta[row]) - case.eta))
        errors.append((err, case.name))
    worst, name = max(errors)
    if worst <= tolerance:
        return None
    norms = np.linalg.norm(hidden, axis=1)
    if np.allclose(norms, 1.0, atol=1e-3):
        cause = "the engine normalises its output: set use_activation to false"
    else:
        cause = (
            "likely causes: a pooling type other than LAST, an activation, a different "
            "dtype than --scorer-dtype says, or the engine serving another folder"
        )
    return (
        f"coefficients off by {worst:.3g} on probe {name!r} (tolerance {tolerance:g}); "
        f"{cause}. Serve the exported folder with {ENGINE_FLAGS}"
    )
