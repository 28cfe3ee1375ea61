"""Classic ControlNets (SD1.x, SD2.x, SDXL): the copied UNet encoder and its zero convolutions."""
