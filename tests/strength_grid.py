"""The img2img strengths and SD's discrete beta schedule that the schedule tests and their ComfyUI
counterparts sweep."""
STRENGTHS = [i / 20 for i in range(21)] + [0.33, 0.999]
FLOW_STRENGTHS = sorted(set(STRENGTHS + [0.3, 0.35, 0.6, 0.7, 0.9, 0.01, 0.49, 0.51]))
SD_BETAS = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)
