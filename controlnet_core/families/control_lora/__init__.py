"""Control-LoRA (Stability): a low-rank ControlNet completed with the base model's UNet weights."""
