"""SD3 / SD3.5 ControlNets (InstantX SD3 Medium, Stability's SD3.5 Large): MMDiT block residuals."""
