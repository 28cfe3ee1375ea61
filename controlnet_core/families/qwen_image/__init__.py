"""Qwen-Image ControlNets: InstantX (Union, Inpainting) and the 2512 Fun Union, residuals on the image tokens."""
