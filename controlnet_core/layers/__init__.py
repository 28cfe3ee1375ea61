"""Pieces several control families share: attention kernels, timestep embeddings, RMS norms, token grids."""
