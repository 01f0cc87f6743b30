"""The Gaussian-process view of a kernel: validated PSD matrices (``linalg``), kernel sources
(``sources``), log-probabilities, candidates and posteriors (``prior``), eigenmodes (``spectrum``)
and scikit-learn estimators (``estimators``, loaded on first use)."""
