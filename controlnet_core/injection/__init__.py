"""How residuals reach the base model: the injection spec, the window, hint fitting and weighting.

Imports only its own folder and the core's bottom files."""
