"""ControlNet Union (xinsir ControlNet++ for SDXL, ProMax): several control types in one ControlNet pass."""
