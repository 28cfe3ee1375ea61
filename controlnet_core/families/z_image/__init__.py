"""Z-Image (Turbo) Fun ControlNets (alibaba-pai): control stream, version detection, control context."""
