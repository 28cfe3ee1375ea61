"""How residuals reach the base model: the injection spec, the window, strength keyframes, per-latent
strengths, residual reuse, hint fitting and weighting.

Imports only its own folder and the core's bottom files."""
