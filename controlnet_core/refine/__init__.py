"""Refinement math on images and schedules: padded crop and paste, masks, float resampling, img2img cuts.

Imports only its own folder: nothing here knows about control models.
"""
