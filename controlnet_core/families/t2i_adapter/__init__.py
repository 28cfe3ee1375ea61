"""T2I-Adapters (TencentARC full and light, SDXL): features added after the UNet's input blocks."""
