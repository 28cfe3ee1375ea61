"""Flux ControlNets (InstantX, Shakker-Labs Union, XLabs, Mistoline): residuals on the image tokens."""
