"""Rate-distortion: the classical baselines, rate control, the hybrid residual and encoding a
pair into a .qmtg payload."""
