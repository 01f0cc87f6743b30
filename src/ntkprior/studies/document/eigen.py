"""Section 1 of the document's analysis: spectra and eigenvectors of several kernels on one set of inputs."""

from __future__ import annotations

import numpy as np
import torch

from ntkprior.prior.spectrum import count_sign_changes, eigenmodes
from ntkprior.studies.progress import Progress, silent
from ntkprior.studies.result import StudyResult, numbers


def eigen_study(panels: dict, x: torch.Tensor, coordinate: np.ndarray, coordinate_label: str,
                progress: Progress | None = None, max_modes: int = 8) -> StudyResult:
    """Eigenvalues and the first ``max_modes`` eigenvectors of each ``panels[title] = (arch, kernel)`` on x.

    Every eigenvalue, but only the first ``max_modes`` eigenvectors: ``eigenmodes(..., k=max_modes,
    all_values=True)``, the eigenvalues without vectors and the top vectors by Lanczos (the full
    decomposition only when ``max_modes`` is a large share of n). Sign changes are counted along the
    input for 1-D inputs only; along a principal coordinate of higher-dimensional inputs neighbours
    need not be close, and the count would mean nothing. The round-off level n·ε·λ₁ marks the
    eigenvalues that are noise.
    """
    progress = progress or silent()
    one_d = x.ndim == 2 and x.shape[1] == 1
    order = np.argsort(coordinate, kind="stable")
    res, drawn = {"n": int(x.shape[0]), "coordinate": coordinate_label, "one_d": one_d, "kernels": {}}, {}
    k = min(max_modes, int(x.shape[0]))
    for title, (arch, kernel) in panels.items():
        with progress.task(f"eigenmodes of the {title}"):
            modes = eigenmodes(arch, x, k=k, kernel=kernel, all_values=True)
        values, vectors = modes.all_values, modes.vectors[order]   # along the coordinate
        changes = count_sign_changes(vectors) if one_d else None
        floor = float(x.shape[0] * np.finfo(np.float64).eps * float(values[0]))
        res["kernels"][title] = {"arch": str(arch), "kernel": kernel, "eigenvalues": numbers(values),
                                 "sign_changes": None if changes is None else numbers(changes),
                                 "roundoff_level": floor, "above_roundoff": int((values > floor).sum())}
        drawn[title] = {"x": coordinate[order], "values": values, "vectors": vectors,
                        "sign_changes": changes, "floor": floor}
    plane = None if one_d else input_plane(x)
    return StudyResult("eigenmodes", res, {"kernels": drawn, "plane": plane,
                                           "vectors": {t: d["vectors"] for t, d in drawn.items()}})


def input_plane(x: torch.Tensor) -> tuple[np.ndarray, tuple[str, str]]:
    """Two coordinates to draw inputs in: 2-D inputs as they are, anything else (more features,
    signals, images) on its first two principal coordinates."""
    flat = x.reshape(len(x), -1).numpy()
    if flat.shape[1] == 2:
        return flat, ("x₁", "x₂")
    from sklearn.decomposition import PCA
    return PCA(2).fit_transform(flat), ("principal coordinate 1", "principal coordinate 2")
