"""Qwen-Image InstantX ControlNets (Union, Inpainting): residuals on the image tokens."""
